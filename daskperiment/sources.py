"""The code and environment methods ``Experiment`` gets from here: get_code, get_environment,
get_python_packages (the trees a trial recorded, or the current ones)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import daskperiment_store as store
from daskperiment_store import Link

from .errors import TrialNotFound
from .reads import read_json

if TYPE_CHECKING:
    from .experiment import Experiment


class SourceMethods:
    """The steps' source and the environment, current or of a recorded trial. ``code`` and
    ``environment`` are imported on first use: opening an experiment never needs them."""

    def _ex(self) -> Experiment:
        return cast("Experiment", self)

    def get_code(self, trial_id: int | None = None) -> str:
        """Source of the steps (decorator lines left out): current, or of a trial."""
        from . import code

        ex = self._ex()
        if trial_id is None and ex._steps:
            sources = {name: spec.code.source for name, spec in ex._steps.items()}
        else:
            record = ex._record(trial_id)
            sources = self._read_code(ex._need_store(), record)
        return code.format_code(sources, decorators=False)

    def _read_code(self, st: store.Store, record: dict[str, Any]) -> dict[str, str]:
        link = record.get("code")
        if not isinstance(link, Link):
            return {}
        tree = read_json(st, link.oid)
        return {name: read_json(st, source.oid) for name, source in tree["steps"]}

    def get_environment(self, trial_id: int | None = None, category: str | None = None) -> Any:
        """The environment of a trial (the current one if ``trial_id`` is None): a dict of
        categories (platform, python, hardware, packages, numpy, pandas, git), or one."""
        from . import environment

        ex = self._ex()
        if trial_id is None:
            env = environment.capture()
        else:
            link = ex._record(trial_id).get("environment")
            if not isinstance(link, Link):
                raise TrialNotFound(trial_id, ex.id, ex._last_trial_id)
            env = ex._read_environment(ex._need_store(), link.oid)
        if category is None:
            return env
        if category not in env:
            raise KeyError(
                f"no environment category {category!r}; recorded categories: {sorted(env)}"
            )
        return env[category]

    def get_python_packages(self, trial_id: int | None = None) -> list[str]:
        """Installed distributions as ``name version (location)`` lines."""
        return list(self.get_environment(trial_id, "packages"))
