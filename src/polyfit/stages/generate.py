"""Stage generate: params.data -> data/train.pt and data/held_out.pt, the tables the model trains
on and is scored on, tracked as one MLflow run that logs both files as MLflow datasets (each
digest is the md5 dvc.lock records)."""

from polyfit import files, paths
from polyfit.core.data import SOURCES
from polyfit.core.runtime import configure_torch
from polyfit.params import flatten, load_params
from polyfit.tracking import runs, store


def main() -> None:
    params = load_params(paths.PARAMS)
    data = params.data
    configure_torch()  # the noise and the split have their own seeded generators
    train, held_out = SOURCES[data.source](**data.source_params())
    outputs = {paths.TRAIN_DATA: train, paths.HELD_OUT_DATA: held_out}
    contents = {path: files.table_bytes(table) for path, table in outputs.items()}

    connection = store.connect(params.mlflow.experiment)
    name = runs.run_name("generate", f"{data.source} {len(train.y)} + {len(held_out.y)} rows")
    logged = flatten({"data": data.model_dump(exclude_none=True)})
    tags = {"data_md5": files.digests(contents[paths.TRAIN_DATA]).md5}
    with runs.stage_run("generate", connection, name, logged, tags) as (run, _):
        for path, table in outputs.items():
            files.write_atomic(path, contents[path])
            dataset = runs.DvcDataset(str(path), files.digests(contents[path]).md5, len(table.y))
            run.log_inputs(dataset, "training" if path == paths.TRAIN_DATA else "held out")
        run.log_metrics({"y_mean": train.y.mean().item(), "y_std": train.y.std().item()})
    for path, table in outputs.items():
        print(f"wrote {path}: {len(table.y)} rows of {', '.join(table.features)} and y")
