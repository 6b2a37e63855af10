"""runtime.device: where training, evaluation and SPDY's scoring run (CPU here; CUDA on a GPU
worker), chosen per step, with a clear error when CUDA is asked for and absent."""

import pytest
import torch
from typer.testing import CliRunner

from pruneflow.cli import app
from pruneflow.config import Params
from pruneflow.errors import PruneflowError
from pruneflow.runtime import current_device, device_scope, resolve_device
from pruneflow.steps.base import Step

needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this host has CUDA")


def test_auto_is_cuda_only_where_it_exists():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(PruneflowError, match="unknown device 'tpu'"):
        resolve_device("tpu")


@needs_no_cuda
def test_cuda_without_cuda_names_the_param():
    with pytest.raises(PruneflowError, match=r"runtime.device.*CUDA is not available"):
        resolve_device("cuda")


def test_a_step_computes_inside_its_device_scope(workdir):
    seen = []

    def compute(p):
        seen.append(current_device())
        (workdir / "out.txt").write_text("x")
        return {}

    step = Step(
        "probe", ("runtime.device",), lambda p: [], lambda p: [workdir / "out.txt"], compute
    )
    step.run(Params.model_validate({"runtime": {"device": "cpu"}}))
    assert seen == [torch.device("cpu")]
    assert current_device() == torch.device("cpu")  # the scope ended with the step
    with device_scope("cpu"):
        assert current_device().type == "cpu"


@needs_no_cuda
def test_stage_asked_for_cuda_on_a_cpu_host_fails_with_one_line(workdir):
    # in this process (CliRunner): the message is the CLI's, a subprocess would add only its
    # start-up (test_cli.py runs `pruneflow stage` as a subprocess)
    result = CliRunner().invoke(app, ["stage", "prepare", "--set", "runtime.device=cuda"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) >= 1 and "CUDA is not available" in lines[-1]
    assert "Traceback" not in result.stderr
