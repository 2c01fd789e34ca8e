"""`polyfit promote [--model MODEL_ID]`: register the best comparable model as the champion."""

from polyfit import paths
from polyfit.params import load_params
from polyfit.tracking import registry, store


def main(args) -> None:
    params = load_params(paths.PARAMS)
    client, experiment_id = store.connect(params.mlflow.experiment)
    print(registry.promote(client, experiment_id, params.mlflow.registered_model, args.model))
