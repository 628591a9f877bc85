"""zkalloc in Dask workers: a WorkerPlugin doing the process-wide install.

    from distributed import Client
    from zkalloc_np.dask import ZkallocPlugin, worker_stats

    client = Client(cluster)
    client.register_plugin(ZkallocPlugin(cache_bytes="2G"))
    ...                                   # tasks' numpy arrays now use the cache
    print(worker_stats(client))          # {worker address: Stats.as_dict()}

Why process-wide: a NEP 49 handler set with ``installed()`` lives in a
contextvar, and Dask runs each task in a thread of its own executor with a
context of its own, so a handler set in ``setup()`` would not reach tasks.
``install()`` swaps numpy's default handler capsule, which every task
context uses.  Settings given to the plugin are checked when it is built (on
the client) and applied in each worker before the install.  Settings from
the environment (``ZKALLOC_*``) reach worker processes through the Nanny's
``distributed.nanny.pre-spawn-environ`` config.
"""
from __future__ import annotations

from typing import Any

from . import _settings

try:
    from distributed import WorkerPlugin
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("zkalloc_np.dask needs distributed: pip install 'zkalloc-np[dask]'") from exc

__all__ = ["ZkallocPlugin", "worker_stats"]


class ZkallocPlugin(WorkerPlugin):
    """Install zkalloc process-wide in every worker, with the given settings.

    ``setup()`` applies the settings (``configure()``) and calls ``install()``;
    ``teardown()`` (worker close, or ``client.unregister_worker_plugin("zkalloc")``)
    calls ``uninstall()``.  Bad settings raise ValueError here, on the client.
    """

    name = "zkalloc"

    def __init__(self, **settings: Any) -> None:
        self.settings: dict[str, int] = _settings.validate(settings)

    def setup(self, worker: Any) -> None:
        """Apply the settings and install zkalloc for the whole worker process."""
        import zkalloc_np
        zkalloc_np.install(**self.settings)

    def teardown(self, worker: Any) -> None:
        """Stop serving new requests from the cache; live arrays stay valid."""
        import zkalloc_np
        zkalloc_np.uninstall()

    def __repr__(self) -> str:
        return f"ZkallocPlugin({', '.join(f'{k}={v}' for k, v in self.settings.items())})"


def _stats_dict() -> dict[str, Any]:
    import zkalloc_np
    return zkalloc_np.stats().as_dict()


def worker_stats(client: Any) -> dict[str, dict[str, Any]]:
    """Each worker's ``zkalloc_np.stats().as_dict()``, keyed by worker address."""
    stats: dict[str, dict[str, Any]] = client.run(_stats_dict)
    return stats
