"""One configuration of a Dask sweep, run by `polyfit worker` in the clone it was started in.

Fetch the submitting commit from `origin`, check it out, `dvc exp run --temp` the configuration,
then `dvc exp push --force origin NAME`: the experiment's git ref to origin and its outputs to
the DVC remote. The name depends only on the configuration, so a task that Dask reruns after its
worker died pushes under the same name, overwriting whatever the dead attempt left.
"""

import logging
import os
import socket
import subprocess

from polyfit.errors import PolyfitError
from polyfit.params import load_params
from polyfit.paths import PARAMS, venv_first
from polyfit.sweep.grid import Result, error_line, experiment_ref, git, read_result
from polyfit.tracking import runs, store

CLONE_VARIABLE = "POLYFIT_WORKER_CLONE"  # set by `polyfit worker`
# Under "distributed", whose handler `dask worker` sets up: the lines land in the worker's log.
log = logging.getLogger("distributed.polyfit")


def clone_dir() -> str:
    return os.environ.get(CLONE_VARIABLE) or os.getcwd()


def worker_label() -> str:
    """host:clone, the `worker` column of the sweep's table."""
    return f"{socket.gethostname()}:{clone_dir()}"


def run_configuration(commit: str, name: str, overrides: list[str]) -> Result:
    """Run and push one experiment; failures are results (with a reason), not exceptions."""
    clone = clone_dir()
    failure = _checkout(commit, clone)
    if failure is None:
        failure = _end_lost_runs(name, clone) or _run_and_push(commit, name, overrides, clone)
    result = (
        Result(name, overrides, False, failure)
        if failure
        else read_result(commit, name, overrides, clone)
    )
    result.worker = worker_label()
    return result


def _checkout(commit: str, clone: str) -> str | None:
    """Put the clone's workspace on `commit`; why not, or None."""
    fetched = git("fetch", "--quiet", "origin", cwd=clone)
    if fetched.returncode != 0:
        return f"git fetch origin in {clone}: {error_line(fetched.stderr)}"
    checkout = git("checkout", "--quiet", "--detach", commit, cwd=clone)
    if checkout.returncode != 0:
        return f"git checkout {commit[:12]} in {clone}: {error_line(checkout.stderr)}"
    return None


def _run_and_push(commit: str, name: str, overrides: list[str], clone: str) -> str | None:
    """`dvc exp run --temp` then `dvc exp push`; the error line if either fails, else None."""
    ref = experiment_ref(commit, name)
    git("update-ref", "-d", ref, cwd=clone)  # an earlier attempt's
    settings = [arg for override in overrides for arg in ("-S", override)]
    for command in (
        ["dvc", "exp", "run", "--temp", "--name", name, *settings],
        ["dvc", "exp", "push", "--force", "origin", name],
    ):
        # the worker's environment (tracking URI, credentials); its venv runs the stages
        env = venv_first(os.environ)
        done = subprocess.run(command, cwd=clone, capture_output=True, text=True, env=env)
        output = done.stdout + done.stderr
        for line in output.splitlines():  # the train stage's word on its checkpoint, if any
            if line.startswith(("resuming from step", "not resuming from")):
                log.info("%s: %s", name, line)
        log.info(
            "%s: %s: exit %d, %s", name, " ".join(command[:3]), done.returncode, error_line(output)
        )
        if done.returncode != 0:
            return f"{' '.join(command[:3])}: {error_line(output)}"
    return _check_pushed(ref, clone)


def _check_pushed(ref: str, clone: str) -> str | None:
    """Why origin does not hold the experiment's commit, or None: `dvc exp push` exits 0 on
    "No experiments to push" too, and a sweep's "ok" means the result is on origin."""
    local = git("rev-parse", "--verify", "--quiet", ref, cwd=clone).stdout.strip()
    listed = git("ls-remote", "origin", ref, cwd=clone)
    remote = listed.stdout.split()[:1]
    log.info("%s: %s here, %s on origin", ref, local[:12] or "none", (remote or ["none"])[0][:12])
    if listed.returncode != 0:
        return f"git ls-remote origin: {error_line(listed.stderr)}"
    if not local or remote != [local]:
        return f"origin does not hold {ref} at {local[:12] or '?'} after dvc exp push"
    return None


def _end_lost_runs(name: str, clone: str) -> str | None:
    """Mark KILLED the runs an earlier attempt at `name` left RUNNING when its worker died.

    One task at a time runs a name, so any run of it still RUNNING now belongs to a lost attempt.
    Returns why the store could not be read, or None.
    """
    here = os.getcwd()
    os.chdir(clone)  # the store and params of the clone (one task at a time per worker)
    try:
        client, experiment_id = store.connect(load_params(PARAMS).mlflow.experiment)
        found = client.search_runs(
            [experiment_id], f"tags.dvc_exp = '{name}' and attributes.status = 'RUNNING'"
        )
        for run in found:
            tags = run.data.tags
            lost = f"{tags.get('host', '?')} (pid {tags.get('pid', '?')})"
            reason = f"worker {lost} lost; {name} rerun on {worker_label()}"
            runs.end_run(client, run.info.run_id, "KILLED", reason)
        return None
    except PolyfitError as error:
        return f"MLflow: {error}"
    finally:
        os.chdir(here)
