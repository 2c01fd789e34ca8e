"""Stage generate: params.data -> data/dataset.pt (x, y), tracked as one MLflow run."""

from polyfit import background, files, paths, tracking
from polyfit.params import DataParams, flatten, load_params


def make(data: DataParams):
    """In the compute child: the dataset file's bytes and two summary numbers."""
    from polyfit.data import make_dataset
    from polyfit.runtime import configure_torch

    configure_torch()  # the noise has its own seeded generator
    x, y = make_dataset(**data.model_dump())
    yield {
        "content": files.tensors_to_bytes({"x": x, "y": y}),
        "metrics": {"y_mean": y.mean().item(), "y_std": y.std().item()},
    }


def main() -> None:
    params = load_params(paths.PARAMS)
    data = params.data
    name = tracking.run_name("generate", f"{data.target} n={data.n_samples}")
    logged = flatten({"data": data.model_dump()})
    experiment = params.mlflow.experiment
    with (
        background.child(make, data) as compute,  # imports torch while we open MLflow
        tracking.stage_run("generate", experiment, name, logged, {}) as run,
    ):
        made = compute.next()
        files.write_atomic(paths.DATASET, made["content"])
        run.set_tags({"data_sha256": files.sha256(made["content"])})
        run.log_metrics(made["metrics"])
    print(f"wrote {paths.DATASET}: {data.n_samples} points of {data.target}(x)")
