"""The Dask imputer's link to the cluster: tasks, tree reductions and waits bounded by a
timeout that names the step ("k-means run 1/1, iteration 3") rather than hanging."""

from __future__ import annotations

#: Partial results combined by one reduction task.
SPLIT_EVERY = 8


def _constant(value):
    return value


class Session:
    """The client and the bound on every wait."""

    def __init__(self, client, timeout: float):
        self.client = client
        self.timeout = timeout

    def submit(self, func, *args):
        return self.client.submit(func, *args, pure=False)

    def constant(self, value):
        """A future holding ``value``, recomputable from its task (unlike scattered data)."""
        return self.client.submit(_constant, value, pure=False)

    def reduce(self, futures, func, *args):
        """Tree reduction, ``SPLIT_EVERY`` contiguous results at a time (order kept)."""
        while len(futures) > 1:
            futures = [self.client.submit(func, *args, *futures[i:i + SPLIT_EVERY], pure=False)
                       for i in range(0, len(futures), SPLIT_EVERY)]
        return futures[0]

    def result(self, future, what: str):
        from distributed import TimeoutError as DistributedTimeout

        try:
            return future.result(timeout=self.timeout)
        except (TimeoutError, DistributedTimeout):
            pass
        raise TimeoutError(
            f"DaskUL4M4Imputer: {what} did not finish within timeout={self.timeout} s; "
            f"{self._workers()}. A worker that died without coming back leaves its data and "
            "tasks waiting for a worker: check the cluster, or raise `timeout` for slow steps."
        )

    def _workers(self) -> str:
        try:
            n = len(self.client.scheduler_info(n_workers=-1)["workers"])
        except Exception:
            try:
                n = len(self.client.scheduler_info()["workers"])
            except Exception as error:
                return f"the scheduler could not be asked for its workers ({error!r})"
        return f"{n} worker(s) connected to the scheduler" + (" (none!)" if n == 0 else "")
