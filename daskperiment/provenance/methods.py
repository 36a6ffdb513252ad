"""The provenance methods ``Experiment`` gets from here: track, trials_using, checkout, reproduce."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from ..experiment import Experiment
    from .checkout import Checkout
    from .lineage import Use
    from .reproduce import ReproduceReport


class ProvenanceMethods:
    """What a trial depended on, from the experiment: declared inputs, lineage, checkout and
    reproduce (see docs/provenance.md). Each method imports its module on first use: opening
    an experiment needs none of them."""

    def _ex(self) -> Experiment:
        return cast("Experiment", self)

    def track(self, path: Any) -> Any:
        """Declare that the running step reads ``path`` (a file or a directory) and return
        it: for readers no hook sees (pyarrow, h5py, subprocesses), e.g.
        ``pd.read_parquet(ex.track(path))``. See docs/provenance.md."""
        from . import inputs

        return inputs.track(path)

    def trials_using(self, what: Any) -> list[Use]:
        """The steps of trials that read the file ``what`` (a path: any version of it, or any
        file below a directory) or used the digest ``what`` (a file's content, a step's
        input, output or persisted object), oldest trial first."""
        from . import lineage

        ex = self._ex()
        st = ex._read_store()
        if st is None:
            return []
        ids = ex._reader.trial_ids(st)
        return lineage.find_uses(((i, ex._record(i)) for i in ids), what)

    def checkout(self, trial_id: int, directory: Any, force: bool = False) -> Checkout:
        """Write trial ``trial_id``'s source tree (script or notebook cells, local modules)
        into ``directory``, byte for byte; a non-empty directory needs ``force=True``."""
        from .checkout import checkout

        ex = self._ex()
        return checkout(ex._read_store(), ex.id, trial_id, directory, force)

    def reproduce(self, trial_id: int) -> ReproduceReport:
        """Re-run trial ``trial_id`` from the store alone (its source tree, parameters and
        seed, in a fresh process) and compare step by step: a
        :class:`daskperiment.provenance.reproduce.ReproduceReport`, true when identical."""
        from .reproduce import reproduce

        ex = self._ex()
        report = reproduce(ex._read_store(), ex.id, trial_id)
        if report.reproduction:
            ex._last_trial_id = max(ex._last_trial_id, report.reproduction)
        return report
