"""Stage generate: params.data -> data/dataset.pt (x, y), tracked as one MLflow run that logs
the file as an MLflow dataset (digest: the md5 dvc.lock records)."""

from polyfit import compute, files, paths, tracking
from polyfit.params import DataParams, flatten, load_params


def make_dataset_file(data: DataParams) -> dict:
    """The dataset file's bytes and two summary numbers."""
    from polyfit.data import make_dataset
    from polyfit.runtime import configure_torch

    configure_torch()  # the noise has its own seeded generator
    x, y = make_dataset(**data.model_dump())
    return {
        "content": files.tensors_to_bytes({"x": x, "y": y}),
        "metrics": {"y_mean": y.mean().item(), "y_std": y.std().item()},
    }


def main() -> None:
    params = load_params(paths.PARAMS)
    data = params.data
    name = tracking.run_name("generate", f"{data.target} n={data.n_samples}")
    logged = flatten({"data": data.model_dump()})
    with compute.torch_process() as torch_side:
        making = torch_side.submit(make_dataset_file, data)  # imports torch ...
        tracking.preload()  # ... while this process imports MLflow
        connection = tracking.connect(params.mlflow.experiment)
        with tracking.stage_run("generate", connection, name, logged, {}) as run:
            made = making.result()
            files.write_atomic(paths.DATASET, made["content"])
            digests = files.digests(made["content"])
            run.set_tags({"data_sha256": digests.sha256})
            run.log_inputs(
                tracking.DvcDataset(str(paths.DATASET), digests.md5, data.n_samples), "generated"
            )
            run.log_metrics(made["metrics"])
    print(f"wrote {paths.DATASET}: {data.n_samples} points of {data.target}(x)")
