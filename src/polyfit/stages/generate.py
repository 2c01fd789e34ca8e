"""Stage generate: params.data -> data/dataset.pt (x, y), tracked as one MLflow run."""

from polyfit import files, paths, tracking
from polyfit.params import flatten, load_params


def main() -> None:
    params = load_params(paths.PARAMS)
    data = params.data
    from polyfit.data import make_dataset  # imports torch: after validation, so bad params
    from polyfit.runtime import configure_torch  # fail in milliseconds

    configure_torch()  # the noise has its own seeded generator
    name = tracking.run_name("generate", f"{data.target} n={data.n_samples}")
    logged = flatten({"data": data.model_dump()})
    with tracking.stage_run("generate", params.mlflow.experiment, name, logged, {}) as run:
        x, y = make_dataset(**data.model_dump())
        content = files.tensors_to_bytes({"x": x, "y": y})
        files.write_atomic(paths.DATASET, content)
        run.set_tags({"data_sha256": files.sha256(content)})
        run.log_metrics({"y_mean": y.mean().item(), "y_std": y.std().item()})
    print(f"wrote {paths.DATASET}: {data.n_samples} points of {data.target}(x)")
