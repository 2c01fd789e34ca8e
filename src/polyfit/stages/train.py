"""Stage train: data/train.pt -> models/model.pt, metrics/train.json and plots/loss.csv, tracked
as one MLflow run: params, the loss history and the LoggedModel.

With train.checkpoint_every, the training is checkpointed (checkpoints.py), and a killed one
resumes from its last checkpoint, in the same MLflow run, and ends with the same bytes.
"""

import time

import torch

from polyfit import checkpoints, files, paths
from polyfit.core.batches import ShuffledBatches, full_batch, mini_batches
from polyfit.core.fit import build_optimizer, fit
from polyfit.core.gram import gram_loss
from polyfit.core.loss_metrics import train_metrics
from polyfit.core.model import build_model
from polyfit.core.runtime import configure_torch, device
from polyfit.params import Params, flatten, load_params
from polyfit.tracking import model as logged_model
from polyfit.tracking import registry, runs, scores, store


def main() -> None:
    params = load_params(paths.PARAMS)
    train = params.train
    table, data = files.load_table(paths.TRAIN_DATA)
    configure_torch(train.threads, train.seed)
    on = device(train.device)
    model = build_model(params.model.model_dump(), len(table.features)).to(on)
    options = train.optimizer_options()
    optimizer = build_optimizer(train.optimizer, model.parameters(), train.lr, options)
    X, y = table.X.to(on), table.y.to(on)
    sampler = ShuffledBatches(len(y), train.batch_size, train.seed) if train.batch_size else None
    loss_function = gram_loss(model, X, y) if train.gradient == "gram" else None

    fingerprint = checkpoints.fingerprint() if train.checkpoint_every else None
    saved, note = checkpoints.find(fingerprint)
    if note:
        print(note, flush=True)
    losses = restore(saved, model, optimizer, sampler) if saved else []
    batches = mini_batches(X, y, sampler) if sampler else full_batch(X, y)
    connection = store.connect(params.mlflow.experiment)  # a dead server fails before training

    name = runs.run_name("train", f"{train.optimizer} lr={train.lr:g}")
    tags = {"data_md5": data.md5, "optimizer": train.optimizer}
    logged = logged_params(params)
    earlier_run = saved["run_id"] if saved else ""
    with runs.stage_run("train", connection, name, logged, tags, earlier_run) as (run, continued):
        tracked = runs.DvcDataset(str(paths.TRAIN_DATA), data.md5, len(y))
        if not continued:
            run.log_inputs(tracked, "training")

        def checkpoint(losses: list[float]) -> None:
            checkpoints.save(fingerprint, snapshot(model, optimizer, sampler, losses, run.run_id))

        started, first_step = time.perf_counter(), len(losses)
        losses = fit(
            model,
            optimizer,
            batches,
            train.steps,
            train.log_every,
            train.divergence_factor,
            loss_function,
            losses,
            report=print_loss,
            checkpoint_every=train.checkpoint_every,
            checkpoint=checkpoint,
        )
        seconds = time.perf_counter() - started
        print(f"Result: {model}", flush=True)

        result = train_metrics(losses)  # final_loss, steps, tail_mean_loss
        model_bytes = files.to_bytes(model.cpu().state_dict())
        files.write_atomic(paths.MODEL, model_bytes)
        files.write_json(paths.TRAIN_METRICS, result)
        files.write_csv(paths.LOSS_CURVE, {"step": range(len(losses)), "loss": losses})

        run.log_history("loss", losses)
        model_sha256 = files.sha256(model_bytes)
        run.set_tags({"model_sha256": model_sha256})
        model_tags = {"model_sha256": model_sha256, "data_md5": data.md5, **runs.experiment_tags()}
        model_config = params.model.model_dump()
        model_id = logged_model.log_model(run, paths.MODEL, model_config, table, logged, model_tags)
        steps_here = max(len(losses) - first_step, 1)
        timing = {"train_seconds": seconds, "us_per_step": 1e6 * seconds / steps_here}
        run.log_metrics(result | timing, model_id=model_id, dataset=tracked)
        scores.reuse_scores(run, model_id, model_sha256, data.md5)
        version = registry.register_first(
            run.client, params.mlflow.registered_model, model_id, run.run_id
        )
        run.set_tags({"model_id": model_id} | ({"registered_version": version} if version else {}))
    checkpoints.remove(fingerprint)


def snapshot(model, optimizer, sampler, losses: list[float], run_id: str) -> dict:
    """What training needs to carry on from here to the same bytes."""
    return {
        "step": len(losses),
        "losses": losses,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "sampler": sampler.state_dict() if sampler else None,
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "run_id": run_id,
    }


def restore(saved: dict, model, optimizer, sampler) -> list[float]:
    """Put a snapshot back; the loss history up to it."""
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    if sampler:
        sampler.load_state_dict(saved["sampler"])
    torch.set_rng_state(saved["rng"])
    if saved["cuda_rng"]:
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    return list(saved["losses"])


def logged_params(params: Params) -> dict:
    """What the train run shows as params: data, model, train and the chosen optimizer's options."""
    train = params.train.model_dump(exclude={"options"})
    options = {params.train.optimizer: params.train.optimizer_options()}
    data = params.data.model_dump(exclude_none=True)  # the source and its block
    return flatten({"data": data, "model": params.model.model_dump(), "train": train}) | flatten(
        {"train": {"options": options}}
    )


def print_loss(step: int, loss: float) -> None:
    print(step, loss, flush=True)
