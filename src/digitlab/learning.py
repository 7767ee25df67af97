"""Learning from corrections as they come: one personal model kept in step with one store.

The web server and the desktop app both read digits through a `Learning`'s `predictor`
and hand it every correction the user makes ("Wrong? This is a ..."). The correction is
stored first, always; then, when learning is on, the personal model
(`digitlab.adapt.PersonalModel`: the base model plus a prototype layer) learns it with
one refit (a fraction of a second), so the next reading of the same drawing is right.
The refits run in a process of their own (`digitlab.adapt.RefitProcess`): the readings
never share this interpreter's lock with them.

The store is the memory: each correction learned is marked ``learned`` in it, so a
restarted app learns the same ones again (the newest ``max_per_class`` per digit), and
a reset unmarks them all. One store is one user's handwriting. The model and the marks
change together, under one lock (`Learning._changing`): a correction learned while a
reset runs is learned before it (and forgotten) or after it (and kept), never marked
learned in a store whose model forgot it, so a restart learns exactly what the model held.

Learning needs no MNIST files: its guard rails measure on the MNIST digits shipped with
the model (`digitlab.reference`; `digitlab.adapt`). While their embeddings are still being
computed at start-up (seconds, once per base model), or when they cannot be, corrections
are stored and the status says why nothing is learned. A correction the guard holds back
is stored, not learned, and its answer says why; a full digit forgets its oldest.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from digitlab import adapt  # adapt.PersonalModel, looked up when a Learning is made
from digitlab.adapt import AdaptConfig, lower_priority, one_blas_thread
from digitlab.corrections import Correction, CorrectionStore
from digitlab.errors import DigitlabError
from digitlab.modelfile import OnnxModel
from digitlab.predict import Prediction, Predictor

if TYPE_CHECKING:
    from digitlab.adapt import Example, PersonalModel

log = logging.getLogger("digitlab.learning")
SWITCH_INTERVAL = 0.001  # s: see `Learning.__init__`
STORE_SOURCE = "store#"  # an example's source: this, then the correction's id in the store


@dataclass(frozen=True)
class LearningStatus:
    """What the apps show: whether it learns, from how many corrections, or why not."""

    enabled: bool  # learning from corrections is allowed here (the server's setting)
    ready: bool  # the MNIST reference is loaded: a correction is learned at once
    examples: int  # corrections the personal model has learned from
    counts: dict[int, int]  # ... per digit
    problem: str | None = None  # why it cannot learn (no MNIST files, ...), else None

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "counts": {str(k): v for k, v in self.counts.items()}}


class Learning:
    """The corrections store of ``predictor``'s user, and a personal model that learns them.

    With ``enabled``, ``self.predictor`` reads with a `PersonalModel` over the given
    predictor's model (the same probabilities until something is learned); without, it is
    the given predictor and corrections are only stored. ``config`` is the personal model's
    (`digitlab.adapt.AdaptConfig`); ``process``: its refits run in a process of their own
    (`digitlab.adapt.RefitProcess`), else on a thread of this one.
    """

    def __init__(
        self,
        predictor: Predictor,
        store: CorrectionStore,
        *,
        enabled: bool = True,
        data_dir: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        config: AdaptConfig | None = None,
        process: bool = True,
    ) -> None:
        self.predictor, self.store = predictor, store
        self.base = predictor.model
        self.enabled = enabled and isinstance(self.base, OnnxModel)
        self.personal: PersonalModel | None = None
        self._ready = threading.Event()
        self._starting, self._thread = threading.Lock(), None  # see `start`
        # The personal model and the store's ``learned`` marks change together, under this
        # lock: learning one correction, learning the store's again at start-up, a reset.
        self._changing = threading.Lock()
        # Refits run one at a time, at a lower CPU priority, so that the readings other
        # clients wait for come first (`lower_priority`), and with ``process`` in a process
        # of their own (`digitlab.adapt.RefitProcess`), so that they never hold the lock of
        # this interpreter's threads: this thread only waits for the child's answer. Measured
        # by benchmarks/learning.py (p99 of /api/predict while one client streams corrections).
        self._learner = ThreadPoolExecutor(1, "digitlab-learner", initializer=lower_priority)
        self._problem: str | None = None
        if not self.enabled:
            self._problem = "learning is off here" if not enabled else "needs an ONNX model file"
            return
        # A reading waiting for the interpreter lock while a refit holds it waits out the
        # switch interval (5 ms by default) at each step: 1 ms keeps its tail short.
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        one_blas_thread()

        self.personal = adapt.PersonalModel(self.base, config or AdaptConfig(), data_dir=data_dir,
                                            cache_dir=cache_dir, process=process)  # fmt: skip
        self.predictor = predictor.using(self.personal)

    def start(self, wait: bool = False, *, now: bool = False) -> None:
        """Learn the store's learned corrections again, in a thread, when it holds any (or
        ``now``): the MNIST reference the personal model needs (seconds the first time for
        a base model, then cached; some 50 MB in memory) is loaded only when there is, or
        is about to be, a personal model. Once; later calls only wait when ``wait``."""
        with self._starting:
            if self.enabled and self._thread is None and (now or self._has_learned()):
                self._thread = threading.Thread(
                    target=self._warm_up, name="digitlab-learning", daemon=True
                )
                self._thread.start()
        if wait and self._thread is not None:
            self._thread.join()

    def _has_learned(self) -> bool:
        try:
            return bool(self.store.learned(1))
        except DigitlabError:  # a broken store: nothing to learn again; corrections will say
            return False

    def _warm_up(self) -> None:
        from digitlab.adapt import example_of

        assert self.personal is not None
        lower_priority()  # this thread's own: the readings come first here too
        try:
            self.personal.prepare()  # seconds the first time: outside the lock
            with self._changing:  # a reset now waits, then forgets these too
                rows = self.store.learned(self.personal.config.max_per_class)
                if rows:
                    examples = [example_of(r, f"{STORE_SOURCE}{r.id}") for r in rows]
                    self._unmark(self.personal.add_many(examples).forgotten)
        except DigitlabError as e:  # no MNIST files, a refused guard, a broken store, ...
            self._problem = f"cannot learn: {e}"
            log.warning("personal model: %s", self._problem)
        except Exception:  # a bug: logged, and the app goes on with the base model
            self._problem = "cannot learn: internal error (see the log)"
            log.exception("personal model: warm-up failed")
        finally:
            self._ready.set()

    @property
    def model_sha256(self) -> str:
        """What a stored correction records as its model: the base file (the personal
        layer lives in memory and in the store)."""
        return self.base.card.onnx_sha256 or ""

    def correct(
        self,
        prediction: Prediction,
        label: int,
        *,
        learn: bool = True,
        drawing: dict[str, Any] | None = None,
        request_key: str | None = None,
    ) -> tuple[Correction, str | None]:
        """Store a correction, then learn it when ``learn`` and learning is on.

        Returns the stored correction and, when it was not learned, why not (None: learned).
        A retry (the same ``request_key``) stores nothing and learns nothing again.
        """
        if request_key is not None and (known := self.store.find(request_key)) is not None:
            learned = self.store.was_learned(known.id)
            return known, None if learned else "not learnt when it was first sent"
        stored = self.store.add_prediction(
            prediction, label, self.model_sha256, drawing=drawing, request_key=request_key
        )
        if not learn:
            return stored, "learning from corrections is switched off"
        return stored, self.learn(stored, prediction)

    def learn(self, stored: Correction, prediction: Prediction) -> str | None:
        """Learn one stored correction; None when learned, else why not (held back by the
        guard, ...). A full digit forgets its oldest correction rather than refusing the
        new one, so whoever filled it cannot lock the user out; what the model lets go is
        unmarked in the store, so a restart learns exactly what it holds."""
        why = self._not_ready()
        if why is not None or self.personal is None:
            return why
        # On the learner thread (`_learner`: it refits, or waits for the refit child); the answer
        # waits, since it says whether the correction was learned or held back.
        return self._learner.submit(self._learn_now, stored, prediction).result()

    def _learn_now(self, stored: Correction, prediction: Prediction) -> str | None:
        assert self.personal is not None
        with self._changing:
            try:
                # Marked first: a store that cannot be written leaves the model as it was.
                self.store.set_learned([stored.id])
                try:
                    head = self.personal.add(prediction.normalized, stored.label,
                                             f"{STORE_SOURCE}{stored.id}")  # fmt: skip
                except Exception:  # refused (or a bug): the mark goes with the example
                    self.store.set_learned([stored.id], learned=False)
                    raise
                self._unmark(head.forgotten)
            except DigitlabError as e:  # the guard held it back: stored, not learned
                return str(e)
        return None

    def _unmark(self, forgotten: Sequence[Example]) -> None:
        """Take back the store's marks of the corrections a refit let go."""
        ids = [int(e.source.removeprefix(STORE_SOURCE)) for e in forgotten
               if e.source.startswith(STORE_SOURCE)]  # fmt: skip
        if ids:
            self.store.set_learned(ids, learned=False)

    def reset(self) -> int:
        """Back to the base model; returns how many corrections were forgotten."""
        if self.personal is None:
            return 0
        with self._changing:  # after a refit under way, and its mark, not between them
            forgotten = self.store.forget_learned()  # first: a broken store changes nothing
            self.personal.reset()
            return forgotten

    def status(self) -> LearningStatus:
        if self.personal is None:
            return LearningStatus(False, False, 0, {}, self._problem)
        # Ready: a correction sent now is learned (at once, or after the reference loads).
        ready = self._problem is None and (self._ready.is_set() or self._thread is None)
        n, counts = self.personal.n_examples, self.personal.counts
        return LearningStatus(True, ready, n, counts, self._problem)

    def _not_ready(self) -> str | None:
        if not self.enabled:
            return self._problem
        self.start(now=True)  # the first correction loads what learning needs
        if not self._ready.wait(timeout=60):  # start-up is still computing the reference
            return "the personal model is still getting ready; try again shortly"
        return self._problem
