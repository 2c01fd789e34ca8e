"""`polyfit check`: validate params.yaml, the pipeline's first DVC stage.

DVC deletes a stage's outputs before it runs the stage, so a bad value would cost the outputs of
the last good run before the stage could refuse it; and a misspelt key makes DVC fail on the
key a stage lists as missing, before polyfit could say which key was meant. This stage depends on
the whole params.yaml and comes first in dvc.yaml, so `dvc repro` stops here, outputs intact. It
also refuses sizes that would not fit in this machine's memory in any stage.
"""

from polyfit import paths
from polyfit.arguments import STAGES
from polyfit.memory import check_memory
from polyfit.params import load_params


def main(args) -> None:
    params = load_params(paths.PARAMS)
    for stage in STAGES:
        check_memory(params, stage, str(paths.PARAMS))
    print(f"{paths.PARAMS}: valid")
