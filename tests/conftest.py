import os

# Every test stays on 127.0.0.1 (ARCHITECTURE/FACTS: aioice otherwise uses the LAN address).
os.environ.setdefault("SCOPE_RELAY_ICE_LOOPBACK", "1")
