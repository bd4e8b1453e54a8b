"""Helpers shared by the DAGs: connection ids and default arguments."""

HYPERVISOR_CONN_ID = "hypervisor"
DEFAULT_RETRIES = 2


def default_args(owner: str = "qubinode") -> dict:
    return {"owner": owner, "retries": DEFAULT_RETRIES}
