"""Stage generate: params.data -> data/dataset.pt (x, y), tracked as one MLflow run that logs
the file as an MLflow dataset (its digest is the md5 dvc.lock records)."""

from polyfit import files, paths
from polyfit.core.data import make_dataset
from polyfit.core.runtime import configure_torch
from polyfit.params import flatten, load_params
from polyfit.tracking import runs, store


def main() -> None:
    params = load_params(paths.PARAMS)
    data = params.data
    configure_torch()  # the noise has its own seeded generator
    x, y = make_dataset(**data.model_dump())
    content = files.tensors_to_bytes({"x": x, "y": y})
    digests = files.digests(content)

    connection = store.connect(params.mlflow.experiment)
    name = runs.run_name("generate", f"{data.target} n={data.n_samples}")
    logged = flatten({"data": data.model_dump()})
    tags = {"data_sha256": digests.sha256}
    with runs.stage_run("generate", connection, name, logged, tags) as run:
        files.write_atomic(paths.DATASET, content)
        dataset = runs.DvcDataset(str(paths.DATASET), digests.md5, data.n_samples)
        run.log_inputs(dataset, "generated")
        run.log_metrics({"y_mean": y.mean().item(), "y_std": y.std().item()})
    print(f"wrote {paths.DATASET}: {data.n_samples} points of {data.target}(x)")
