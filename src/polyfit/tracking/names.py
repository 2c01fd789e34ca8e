"""The names the registry, the UI and promote agree on. No MLflow import: `polyfit ui` reads them
without loading torch."""

CHAMPION = "champion"  # the registry alias `polyfit serve` serves
SCORE = "eval.held_out.mse"  # on the train run and its LoggedModel (evaluate); lower is better
