import pytest

from scope_relay.local.cloud_link.target import resolve_app_id, resolve_cloud_target


def test_owner_app_resolves_against_base():
    assert resolve_app_id("me/scope") == "wss://fal.run/me/scope/ws"
    assert resolve_app_id("me/scope/ws") == "wss://fal.run/me/scope/ws"
    assert resolve_app_id("me/scope", "wss://example.test/") == "wss://example.test/me/scope/ws"


def test_full_url_used_as_is_and_ws_url_wins():
    env = {"SCOPE_CLOUD_APP_ID": "ws://127.0.0.1:9/ws", "SCOPE_CLOUD_API_KEY": "k"}
    target = resolve_cloud_target(env)
    assert target.ws_url == "ws://127.0.0.1:9/ws" and target.api_key == "k" and target.is_loopback
    env["SCOPE_CLOUD_WS_URL"] = "wss://elsewhere.test/x/ws"
    assert resolve_cloud_target(env).ws_url == "wss://elsewhere.test/x/ws"


def test_no_app_id_means_embedded():
    assert resolve_cloud_target({}) is None


@pytest.mark.parametrize("bad", ["scope", "a/b/c", "https://x/y", "/"])
def test_malformed_app_id_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="SCOPE_CLOUD_APP_ID"):
        resolve_app_id(bad)
