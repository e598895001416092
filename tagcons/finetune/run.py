"""`run_finetune(config)`: the whole fine-tuning run, single process or one rank of torchrun.

Order matters for honesty: split -> (linear probe on the fit side) -> epochs of training with
validation after each -> best weights back -> only then is the test side's loader built and
evaluated, once. Rank 0 writes the run directory; every rank computes the same decisions from
gathered validation outputs, so they stop at the same epoch.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from tagcons.distributed import DistContext, setup
from tagcons.embed.backbones import Backbone, load_backbone
from tagcons.errors import BadInputError
from tagcons.evaluate.metrics import compute_metrics
from tagcons.evaluate.plots import plot_training_curves
from tagcons.evaluate.provenance import check_reuse, recorded_trained_keys, side_hashes, split_spec, write_side_keys
from tagcons.evaluate.rundir import CONFIG_FILE, read_json, write_config, write_evaluation, write_json
from tagcons.finetune import checkpoint
from tagcons.finetune.config import FinetuneConfig, resolve
from tagcons.finetune.data import Collate, LoaderSettings, TokenTable, eval_loader, train_loader
from tagcons.finetune.export import export_backbone
from tagcons.finetune.loop import Trainer, collect_outputs, make_optimizer, make_precision, make_schedule
from tagcons.finetune.model import FinetuneModel, freeze
from tagcons.finetune.partition import FinetunePartition, load_partition, resolved_dedupe
from tagcons.finetune.probe import EmbedOnly, fit_linear_probe, load_init_head
from tagcons.heads.baselines import shortcut_baselines
from tagcons.heads.calibrate import evaluate_probabilities, evaluation_report, fit_rule
from tagcons.labels import AUTO, class_weights
from tagcons.runtime import compute_threads

log = logging.getLogger(__name__)
CHECKPOINTS = "checkpoints"
CURVES_FILE = "training_curves.png"
# train_loss and val_loss are computed alike (eval mode, after the epoch, class-weighted), so their gap shows
# over-fitting; train_loss_running is the mean loss during the epoch (dropout on, weights moving).
HISTORY_KEYS = (
    "train_loss",
    "train_loss_running",
    "val_loss",
    "val_accuracy",
    "val_macro_f1",
    "val_qwk",
    "samples_per_s",
)


@dataclass
class Hooks:
    """Optional observers (tests, notebooks): which rows each side fed, and the end of each epoch."""

    on_batch: Callable[[str, np.ndarray], None] | None = None  # (side, row numbers into the used pairs)
    on_epoch_end: Callable[[int, dict], None] | None = None  # (epoch index, history so far)


@dataclass
class FinetuneResult:
    run_dir: Path
    metrics: dict
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    backbone_dir: Path
    history: dict
    model: FinetuneModel | None = field(default=None, repr=False)  # as exported (WiSE-mixed backbone)


@dataclass
class TrainingState:
    """What `last/state.pt` records besides the optimiser: where training is and the best so far."""

    epoch: int = 0  # epochs completed
    best_score: tuple[float, float] | None = None  # (validation QWK, -validation loss)
    best_epoch: int = 0
    waited: int = 0
    stopped: bool = False
    history: dict = field(default_factory=lambda: {k: [] for k in HISTORY_KEYS})


def run_finetune(config: FinetuneConfig, hooks: Hooks | None = None) -> FinetuneResult:
    config = resolve(config)
    dist = setup(config.device)
    try:
        with compute_threads(config.workers):
            return _run(config, dist, hooks or Hooks())
    finally:
        dist.close()


def _run(config: FinetuneConfig, dist: DistContext, hooks: Hooks) -> FinetuneResult:
    _check_run_dir(config, dist)
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    partition = load_partition(config, dist)
    if config.resume:
        _check_resumed_partition(config, partition)
    backbone = load_backbone(config.backbone, config.revision)
    model = FinetuneModel(backbone.model, config.hidden, config.dropout, partition.table.scale.n_classes).to(
        dist.device
    )
    collate = Collate(
        partition.table,
        config.images,
        backbone.image_processor,
        TokenTable.build(partition.table.texts, backbone, config.text_templates),
    )
    loading = LoaderSettings(
        config.batch_size,
        config.workers,
        config.seed,
        dist.rank,
        dist.world_size,
        pin_memory=dist.device.type == "cuda",
    )
    precision = make_precision(config.precision, dist.device)
    head_init = (
        _resumed_head_init(config)
        if config.resume
        else _init_head(config, model, partition, collate, loading, precision, dist, hooks)
    )
    freeze(model.clip, config.unfreeze_vision, config.unfreeze_text)
    zero_shot = {n: p.detach().cpu().clone() for n, p in model.clip.named_parameters() if p.requires_grad}
    if config.grad_checkpointing:
        model.clip.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if dist.is_main:
        write_config(config.run_dir, _config_record(config, backbone, partition, precision.name, head_init, dist))
        write_side_keys(config.run_dir, partition.side_keys())
    state = _train(config, model, partition, collate, loading, precision, dist, hooks)
    metrics = _final_evaluation(config, model, partition, collate, loading, precision, dist, hooks, state)
    backbone_dir = Path(config.run_dir) / "backbone"
    if dist.is_main:
        export_backbone(
            backbone,
            zero_shot,
            config.wise_alpha,
            config.run_dir,
            {
                "backbone": backbone.name,
                "model_id": backbone.model_id,
                "revision": backbone.revision,
                "best_epoch": state.best_epoch,
                "parts": side_hashes(partition.side_keys()),  # ties the export's part_keys.json to it
            },
            config.progress,
        )
        write_side_keys(
            backbone_dir, partition.side_keys()
        )  # `embed --backbone` records them: fit-head checks its test side
    dist.barrier()
    return FinetuneResult(
        Path(config.run_dir),
        metrics,
        state.best_epoch,
        state.epoch,
        state.stopped,
        backbone_dir,
        state.history,
        model.cpu(),
    )


def _check_run_dir(config: FinetuneConfig, dist: DistContext) -> None:
    last = config.run_dir / CHECKPOINTS / "last"
    checkpoint.recover_checkpoint(last)
    if config.resume and config.overwrite:
        raise BadInputError("--resume continues the run in --out and --overwrite replaces it: pass one of them")
    if config.overwrite:
        _remove_run(config.run_dir, last, dist)
    if config.resume and not last.is_dir():
        raise BadInputError(f"{config.run_dir}: no checkpoint to resume ({last} is missing); run without --resume")
    if not config.resume and last.is_dir():
        raise BadInputError(
            f"{config.run_dir}: already holds a fine-tuning run; pass --resume to continue it, --overwrite to replace "
            "it, or choose another --out"
        )


def _remove_run(run_dir: Path, last: Path, dist: DistContext) -> None:
    """--overwrite: the fine-tuning run in ``run_dir`` (it has a checkpoint) is deleted before the new one starts."""
    if dist.is_main and last.is_dir():
        log.warning("%s: replacing the fine-tuning run there (--overwrite)", run_dir)
        shutil.rmtree(run_dir)
    dist.barrier()


RESUME_MAY_CHANGE = {
    "overwrite",
    "epochs",
    "patience",
    "device",
    "workers",
    "out",
    "data",
    "images",
    "init_head",
    "allow_unverified_init",
}


def _resumed_head_init(config: FinetuneConfig) -> str:
    """The interrupted run's head_init; refuses a resume whose settings differ from the run's."""
    saved = read_json(config.run_dir / CONFIG_FILE)
    requested = config.to_dict()
    if requested["scale"] == AUTO:  # the run recorded the range auto resolved to
        requested.pop("scale")
    changed = sorted(k for k, v in requested.items() if k not in RESUME_MAY_CHANGE and saved.get(k, v) != v)
    if changed:
        shown = ", ".join(f"{k}: {saved[k]!r} -> {requested[k]!r}" for k in changed[:5])
        raise BadInputError(
            f"{config.run_dir}: --resume with other settings than the run's ({shown}); "
            "resume with the same flags or start a new --out"
        )
    return saved.get("head_init", "resumed")


def _check_resumed_partition(config: FinetuneConfig, partition: FinetunePartition) -> None:
    """--resume must see the same fit / validation / test rows: else trained rows could land in test."""
    saved = read_json(config.run_dir / CONFIG_FILE).get("parts")
    if saved is None:
        log.warning("%s: the run predates part hashes; cannot check that --resume sees the same rows", config.run_dir)
        return
    current = side_hashes(partition.side_keys())
    changed = [name for name in current if saved.get(name) != current[name]]
    if changed:
        raise BadInputError(
            f"{config.run_dir}: --resume with other rows than the run's (the {', '.join(changed)} part(s) changed: "
            "another --data, --images or failed images); rows already trained on could now be tested. "
            "Resume with the run's --data and --images, or start a new --out"
        )


def _checked_init_head(config: FinetuneConfig, partition: FinetunePartition) -> Path:
    """--init-head's run, refused when its training rows (fit + validation) hold any of our test pairs."""
    source = f"--init-head {config.init_head}"
    trained = recorded_trained_keys(config.init_head, source, config.allow_unverified_init, "--allow-unverified-init")
    fix = "fit the donor head with the same --split, --seed and --test-size (and without --cv), or drop --init-head"
    check_reuse(trained, partition.side_keys()["test"], source, fix)
    return config.init_head


def _init_head(config, model, partition, collate, loading, precision, dist, hooks) -> str:
    """LP-FT's first stage (or nothing, for the paper recipe): returns how the head started."""
    if config.init_head:
        init_head = _checked_init_head(config, partition)
        return "fit-head:" + load_init_head(model, init_head, partition.table.scale, config.text_templates)
    if not config.lp_init:
        return "random"
    features_model = EmbedOnly(model)
    rows, features = collect_outputs(
        features_model,
        eval_loader(partition.fit, collate, loading),
        precision,
        dist.device,
        dist,
        "fit",
        hooks.on_batch,
        config.progress,
    )
    weights = _class_weights(partition) if config.class_weights else None
    weight, bias = fit_linear_probe(features, partition.table.labels[rows], weights, config.seed, partition.table.scale)
    model.head.load_linear(weight.to(dist.device), bias.to(dist.device))
    return "linear-probe"


def _class_weights(partition: FinetunePartition) -> torch.Tensor:
    weights = class_weights(partition.table.labels[partition.fit], partition.table.scale.labels)
    return torch.tensor(weights, dtype=torch.float32)


def _config_record(
    config, backbone: Backbone, partition: FinetunePartition, precision: str, head_init: str, dist: DistContext
) -> dict:
    """config.json: the resolved settings plus the keys `tagcons compare` reads."""
    return {
        **config.to_dict(),
        "head": "finetune",
        "scale": str(partition.table.scale),
        "backbone": backbone.name,
        "model_id": backbone.model_id,
        "backbone_revision": backbone.revision,
        "features": "end-to-end",
        "precision_used": precision,
        "head_init": head_init,
        "world_size": dist.world_size,
        "data_summary": partition.summary(),
        "split_spec": _split_spec(config, partition),
        "parts": side_hashes(partition.side_keys()),
    }


def _split_spec(config: FinetuneConfig, partition: FinetunePartition) -> dict:
    """split_spec; with given folds kind "given", the fold file's record and the test fold instead of a test size."""
    spec = split_spec(
        config.split, config.seed, config.test_size, dedupe=resolved_dedupe(config), val_size=config.val_size
    )
    if partition.given_folds is not None:
        spec.update(kind="given", test_size=None, grouping=config.split, given_folds=partition.given_folds)
    return spec


def _train(config, model, partition, collate, loading, precision, dist, hooks) -> TrainingState:
    ddp = (
        DistributedDataParallel(model, device_ids=[dist.device] if dist.device.type == "cuda" else None)
        if dist.active
        else model
    )
    loader = train_loader(partition.fit, collate, loading)
    steps_per_epoch = -(-len(loader) // config.grad_accum)
    optimizer = make_optimizer(model, config)
    weights = _class_weights(partition).to(dist.device) if config.class_weights else None
    trainer = Trainer(
        ddp,
        optimizer,
        make_schedule(optimizer, config, steps_per_epoch),
        precision,
        torch.nn.CrossEntropyLoss(weight=weights),
        config.grad_accum,
        config.grad_clip,
        dist.device,
    )
    state = _resume(config, model, trainer) if config.resume else TrainingState()
    fit_loader = eval_loader(partition.fit, collate, loading)
    val_loader = eval_loader(partition.val, collate, loading) if len(partition.val) else None
    while state.epoch < config.epochs and not state.stopped:
        record = trainer.train_epoch(loader, state.epoch, dist, config.progress, hooks.on_batch)
        record["train_loss_running"] = record.pop("train_loss")
        record["train_loss"] = _validate(model, fit_loader, partition, trainer, dist, hooks, config.progress, "fit")[
            "loss"
        ]
        if val_loader is not None:
            scores = _validate(model, val_loader, partition, trainer, dist, hooks, config.progress, "val")
            record.update({f"val_{name}": value for name, value in scores.items()})
        _advance(state, record, config.patience)
        _save_epoch(config, model, trainer, state, dist)
        log.info("%s", epoch_line(state.epoch, config.epochs, record))
        if hooks.on_epoch_end:
            hooks.on_epoch_end(state.epoch - 1, state.history)
    if state.best_epoch:
        checkpoint.load_weights(config.run_dir / CHECKPOINTS / "best", model)
    return state


def _validate(model, loader, partition, trainer, dist, hooks, show, side: str) -> dict:
    """Loss (eval mode, the training loss's class weights) and scores of one side after an epoch."""
    rows, logits = collect_outputs(model, loader, trainer.precision, trainer.device, dist, side, hooks.on_batch, show)
    labels, scale = partition.table.labels[rows].astype(int), partition.table.scale
    weight = trainer.loss_fn.weight.cpu() if trainer.loss_fn.weight is not None else None
    targets = torch.from_numpy(scale.column_of(labels).astype(np.int64))
    loss = float(F.cross_entropy(torch.from_numpy(logits), targets, weight=weight))
    metrics = compute_metrics(labels, np.asarray(scale.labels)[logits.argmax(axis=1)], labels=scale.labels)
    return {
        "loss": loss,
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "qwk": metrics["qwk"] if metrics["qwk"] is not None else 0.0,
    }


EPOCH_NAMES = {
    "train_loss": "train loss",
    "train_loss_running": "running train loss",
    "val_loss": "validation loss",
    "val_accuracy": "validation accuracy",
    "val_macro_f1": "validation macro-F1",
    "val_qwk": "validation QWK",
}


def epoch_line(epoch: int, epochs: int, record: dict) -> str:
    """`epoch 2/3: train loss 1.0767, validation QWK 0.2148, ... (912 samples/s)`: one epoch's figures, readable."""
    figures = [f"{EPOCH_NAMES.get(k, k.replace('_', ' '))} {v:.4f}" for k, v in record.items() if k != "samples_per_s"]
    speed = f" ({record['samples_per_s']:.0f} samples/s)" if "samples_per_s" in record else ""
    return f"epoch {epoch}/{epochs}: {', '.join(figures)}{speed}"


def _advance(state: TrainingState, record: dict, patience: int) -> None:
    """Append the epoch; a better (QWK, then lower loss) validation score becomes the best.

    Without a validation side (--val-size 0) every epoch runs and the last one is kept.
    """
    for key in HISTORY_KEYS:
        if key in record:
            state.history.setdefault(key, []).append(float(record[key]))
    state.epoch += 1
    if "val_qwk" not in record:
        state.best_epoch = state.epoch
        return
    score = (record["val_qwk"], -record["val_loss"])
    if state.best_score is None or score > state.best_score:
        state.best_score, state.best_epoch, state.waited = score, state.epoch, 0
    else:
        state.waited += 1
        state.stopped = patience > 0 and state.waited >= patience


def _save_epoch(config, model, trainer: Trainer, state: TrainingState, dist: DistContext) -> None:
    if dist.is_main:
        root = config.run_dir / CHECKPOINTS
        if state.best_epoch == state.epoch:
            checkpoint.save_checkpoint(
                root / "best", model, {"epoch": state.epoch, "score": list(state.best_score or [])}
            )
        checkpoint.save_checkpoint(root / "last", model, _checkpoint_state(trainer, state))
        write_json(config.run_dir / "history.json", state.history)
    dist.barrier()


def _checkpoint_state(trainer: Trainer, state: TrainingState) -> dict:
    return {
        "optimizer": trainer.optimizer.state_dict(),
        "schedule": trainer.schedule.state_dict(),
        "scaler": trainer.precision.scaler.state_dict(),
        "rng": checkpoint.rng_state(),
        "progress": {
            "epoch": state.epoch,
            "best_score": list(state.best_score or []),
            "best_epoch": state.best_epoch,
            "waited": state.waited,
            "stopped": state.stopped,
            "history": state.history,
        },
    }


def _resume(config, model, trainer: Trainer) -> TrainingState:
    last = config.run_dir / CHECKPOINTS / "last"
    checkpoint.load_weights(last, model)
    state = checkpoint.load_state(last)
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.schedule.load_state_dict(state["schedule"])
    trainer.precision.scaler.load_state_dict(state["scaler"])
    checkpoint.set_rng_state(state["rng"])
    saved = state["progress"]
    log.info("resuming %s after epoch %d", config.run_dir, saved["epoch"])
    return TrainingState(
        saved["epoch"],
        tuple(saved["best_score"]) or None,
        saved["best_epoch"],
        saved["waited"],
        saved["stopped"],
        saved["history"],
    )


def _final_evaluation(config, model, partition, collate, loading, precision, dist, hooks, state) -> dict:
    """The only look at the test side: its loader is built here, after training ended and after the
    temperature was fitted on the validation side."""
    prior = _prior(partition) if config.class_weights else None  # the class weights divided out, as for heads
    rule = _calibration_rule(model, partition, collate, loading, precision, dist, hooks, config.progress, prior)
    started = time.perf_counter()
    rows, logits = collect_outputs(
        model,
        eval_loader(partition.test, collate, loading),
        precision,
        dist.device,
        dist,
        "test",
        hooks.on_batch,
        config.progress,
    )
    proba = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    labels = partition.table.scale.labels  # the model's outputs, one per score of the scale
    evaluated = evaluate_probabilities(proba, partition.table.labels[rows].astype(int), rule, labels)
    extra = {
        **partition.summary(),
        "n_train": len(partition.fit),
        "best_epoch": state.best_epoch,
        "epochs_run": state.epoch,
        "stopped_early": state.stopped,
        "history": state.history,
        "best_val_qwk": state.best_score[0] if state.best_score else None,
        "test_seconds": time.perf_counter() - started,
    }
    if dist.is_main:  # the shortcut baselines (majority, text-only, image-prior) on the same fit and test rows
        fit, test = partition.table.subset(partition.fit), partition.table.subset(partition.test)
        labels = partition.table.scale.labels
        y_fit, y_test = fit.labels.astype(int), test.labels.astype(int)
        extra["baselines"] = shortcut_baselines(fit, y_fit, test, y_test, config.seed, labels)
        extra["baseline"] = extra["baselines"]["majority"]
    metrics = None
    if dist.is_main:
        title = f"finetune {config.recipe} ({Path(config.backbone).name})"
        extra.update(evaluation_report([evaluated], config.run_dir))
        metrics = write_evaluation(
            config.run_dir,
            partition.table.subset(rows),
            evaluated.pred,
            evaluated.proba,
            extra,
            title,
            partition.table.scale.labels,
            seed=config.seed,
        )
        plot_training_curves(state.history, config.run_dir / CURVES_FILE, title)
    return dist.broadcast(metrics)


def _prior(partition: FinetunePartition) -> tuple[float, ...]:
    """1 / w per score of the scale for the class weights the model trained with (1 where w is 0)."""
    weights = _class_weights(partition).double().numpy()
    return tuple(float(m) for m in np.divide(1.0, weights, out=np.ones_like(weights), where=weights > 0))


def _calibration_rule(model, partition, collate, loading, precision, dist, hooks, show, prior=None):
    """Temperature (and expected-score cuts) of the best model, fitted on the validation side; ``prior``
    divides the class weights out of its probabilities (`tagcons.heads.calibrate.prior_correction`)."""
    if len(partition.val) == 0:
        return fit_rule(None, partition.val, "argmax", partition.table.scale.labels, prior)
    rows, logits = collect_outputs(
        model, eval_loader(partition.val, collate, loading), precision, dist.device, dist, "val", hooks.on_batch, show
    )
    raw = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    return fit_rule(raw, partition.table.labels[rows].astype(int), "argmax", partition.table.scale.labels, prior)
