"""The ``/ws`` control channel and what guards it: per-connection budgets, log forwarding
scoped to its tenant, ICE servers handed to clients."""
