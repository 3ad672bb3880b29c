"""``RayTrainReportCallback`` and ``prepare_trainer`` for ``transformers.Trainer`` (Ray Train 2.60's names).

What reaches rafter, one report per logged step:
- every ``Trainer.log`` (``on_log``): the logged values plus ``step`` (the trainer's global step); the train
  and eval logs of one step are merged into one report;
- every saved checkpoint (``on_save``): the Hugging Face checkpoint folder, as ``<rafter checkpoint>/checkpoint/``,
  with the latest value of every logged key (Ray's behaviour: eval metrics logged before the save are
  there for ``CheckpointConfig(checkpoint_score_attribute=...)``); it replaces that step's log report.

Each rank saves its own part of a Hugging Face checkpoint (rank 0 the weights and optimizer, every rank its
``rng_state_<rank>.pth``), usually into one shared ``output_dir``. After a barrier, the lowest rank that sees a
given folder (same host, same real path) sends it; so each file goes to storage once, and ranks on other
nodes with their own ``output_dir`` still send their part.
"""

from __future__ import annotations

import os
import shutil
import socket
from typing import Any, Dict, List, Optional

try:
    import transformers
    from transformers.trainer_callback import TrainerCallback
except ModuleNotFoundError as exc:
    raise ModuleNotFoundError(
        f"rafter.train.huggingface.transformers needs Hugging Face transformers, which can't be imported "
        f"({exc}). Install it: pip install transformers accelerate   (or pip install 'rafter-train[transformers]')"
    ) from None

from rafter import train
from rafter._worker.alone import warn
from rafter.train._checkpoint import Checkpoint

_STAGE_PREFIX = ".rafter_report_rank_"


class RayTrainReportCallback(TrainerCallback):
    """Report each log and each saved checkpoint of a ``transformers.Trainer`` with ``rafter.train.report``.

    Checkpoints are reported with this layout::

        checkpoint_00000N/   rafter's checkpoint
        └─ checkpoint/       the Hugging Face checkpoint folder (weights, optimizer, scheduler, RNG states)

    Resume with ``trainer.train(resume_from_checkpoint=os.path.join(d, RayTrainReportCallback.CHECKPOINT_NAME))``
    inside ``with rafter.train.get_checkpoint().as_directory() as d:``. Checkpoints follow the trainer's
    ``save_strategy``/``save_steps``; logs follow ``logging_steps``. For the metric a checkpoint is scored by
    to be current, evaluate and save at the same frequency (``eval_strategy == save_strategy``).
    """

    CHECKPOINT_NAME = "checkpoint"

    def __init__(self) -> None:
        super().__init__()
        self._pending: Dict[str, Any] = {}  # logs of the current step, not yet reported
        self._training = False

    def on_train_begin(self, args, state, control, **kwargs):
        self._training = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        if self._pending and self._pending["step"] != state.global_step:
            self._flush()
        self._pending.update(logs)
        self._pending["step"] = state.global_step
        if not self._training:  # trainer.evaluate() on its own: nothing else of this step will follow
            self._flush()

    def on_step_begin(self, args, state, control, **kwargs):
        self._flush()

    def on_train_end(self, args, state, control, **kwargs):
        self._flush()
        self._training = False

    def _flush(self) -> None:
        """One report per step: the train and eval logs of a step arrive separately and go out together."""
        if self._pending:
            metrics, self._pending = self._pending, {}
            train.report(metrics)

    def on_save(self, args, state, control, **kwargs):
        metrics: Dict[str, Any] = {}
        for log in state.log_history:
            metrics.update(log)
        metrics["step"] = state.global_step
        self._pending = {}  # this step's logs are in ``metrics``
        folder = _saved_folder(args, state)
        _barrier()  # every rank has written its part of the folder
        if not _sends_folder(folder):  # a collective: every rank calls it, with a folder or not
            train.report(metrics)
            return
        stage = os.path.join(os.path.dirname(folder), f"{_STAGE_PREFIX}{train.get_context().get_world_rank()}")
        shutil.rmtree(stage, ignore_errors=True)
        try:
            _link_tree(folder, os.path.join(stage, self.CHECKPOINT_NAME))
            train.report(metrics, checkpoint=Checkpoint.from_directory(stage))
        finally:
            shutil.rmtree(stage, ignore_errors=True)


def _saved_folder(args, state) -> Optional[str]:
    """The folder ``Trainer._save_checkpoint`` just wrote (``<output_dir>/checkpoint-<global step>``)."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

    folder = os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}")
    if os.path.isdir(folder):
        return folder
    if os.path.isdir(args.output_dir):  # a trainer subclass that names its folders differently
        return get_last_checkpoint(args.output_dir)
    return None


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _barrier() -> None:
    if _distributed():
        import torch.distributed as dist

        dist.barrier()


def _sends_folder(folder: Optional[str]) -> bool:
    """True on the lowest rank that sees ``folder`` (same host and real path); the others skip sending it."""
    if folder is None:
        mine = None
    else:
        mine = (socket.gethostname(), os.path.realpath(folder))
    if not _distributed():
        return mine is not None
    import torch.distributed as dist

    everyone: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    return mine is not None and everyone.index(mine) == dist.get_rank()


def _link_tree(source: str, dest: str) -> None:
    """``dest`` mirrors ``source`` with hard links (no copy on one filesystem), else with copies."""

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, dest, copy_function=link_or_copy)


def prepare_trainer(trainer: "transformers.Trainer") -> "transformers.Trainer":
    """Check a ``transformers.Trainer`` (or subclass, e.g. TRL's ``SFTTrainer``) for a rafter run; returns it.

    Warns when no ``RayTrainReportCallback`` is attached (nothing would reach rafter: no metrics, no
    checkpoints to restart from). Ray Data iterables, which Ray's version adapts, don't exist in rafter:
    pass ordinary datasets, which ``transformers.Trainer`` shards across the workers itself (it finds
    rafter's process group and trains with DDP).
    """
    if not isinstance(trainer, transformers.Trainer):
        raise TypeError(
            f"prepare_trainer(trainer): expected a transformers.Trainer (or a subclass such as trl.SFTTrainer), "
            f"got {type(trainer).__module__}.{type(trainer).__qualname__}."
        )
    train.get_context()  # only in a train function
    if not any(isinstance(cb, RayTrainReportCallback) for cb in trainer.callback_handler.callbacks):
        warn(
            "prepare_trainer(): the trainer has no RayTrainReportCallback, so its logs and checkpoints don't "
            "reach rafter (no metrics in the Result, no checkpoint for a restart to resume from). Add one: "
            "trainer.add_callback(RayTrainReportCallback())  "
            "# from rafter.train.huggingface.transformers import RayTrainReportCallback"
        )
    return trainer
