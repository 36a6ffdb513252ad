"""What a trial needs of its experiment, and nothing more.

:class:`~daskperiment.trial.TrialRun` and :class:`~daskperiment.sweep.Sweep` are handed a
:class:`Session` rather than the :class:`~daskperiment.experiment.Experiment`: the store for
writing and its picklable handle, the parameter registry, the code and environment trees,
the last trial id, the history index rows and the environment notes. The experiment owns
that state (through :class:`daskperiment.session.ExperimentState`, its base class) and makes
the session (``Experiment._session()``, which imports this module when the first trial
starts); trials and sweeps never touch the experiment's private attributes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import daskperiment_store as store

    from .location import StoreHandle
    from .parameter import ParameterRegistry
    from .steps import StepSpec


@dataclass(frozen=True)
class Session:
    """The per-experiment state one trial reads and updates (see the module docstring)."""

    #: The experiment's id.
    experiment_id: str
    #: Its parameters (what a graph's parameter keys resolve to).
    parameters: ParameterRegistry
    #: Whether steps sample ``sys/cpu``, ``sys/mem``... while they run.
    system_metrics: bool
    #: The seed ``compute()`` and ``sweep()`` use when none is given (None: draw one).
    default_seed: int | None
    #: The store for recording trials, created on first use.
    store_for_writing: Callable[[], store.Store]
    #: The picklable way for workers to reach that store.
    handle: Callable[[], StoreHandle]
    #: ``(store, step specs) -> oid`` of the code tree (cached per set of steps).
    code_tree: Callable[[store.Store, Iterable[StepSpec]], str]
    #: ``store -> (oid, categories)`` of the environment tree.
    environment_tree: Callable[[store.Store], tuple[str, dict[str, Any]]]
    #: Log what changed in the environment since the last trial.
    note_environment: Callable[[str | None, dict[str, Any]], None]
    #: The last trial id this process knows of (0 before the first).
    last_trial_id: Callable[[], int]
    #: The last trial id in the store now (a listing).
    scan_last_trial_id: Callable[[store.Store], int]
    #: A trial id was taken: later trials start above it.
    took_trial_id: Callable[[int], None]
    #: ``(trial id, record oid, record)``: the final record is stored.
    trial_recorded: Callable[[int, str, dict[str, Any]], None]
    #: Write the pending purity entries and the history rows not yet in the index.
    flush_index: Callable[[], None]
    #: ``(store, trial id)``: once per process, before the first purity check, derive
    #: purity entries from the unindexed final records below that trial (daskperiment/purity.py).
    catch_up: Callable[[store.Store, int], None]
    #: The experiment's history table (for a sweep's rows).
    history: Callable[[bool], Any]
