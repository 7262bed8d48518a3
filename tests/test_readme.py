"""The README's Python example runs as written (with the data where the test has it), and its
first lines give the two commands that .ci/run runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy
import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_the_python_example_runs(tmp_path, mnist_dir):
    image = pytest.importorskip("PIL.Image")
    code = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    code = code.replace("../shared/data/mnist", str(mnist_dir))
    from lenet5x.data import read_idx_images

    digit = read_idx_images(mnist_dir / "t10k-images-idx3-ubyte.gz")[0]  # a 7, as a photo
    paper = numpy.full((140, 120), 225, dtype=numpy.uint8)
    paper[20:120, 10:110] = numpy.asarray(image.fromarray(255 - digit).resize((100, 100)))
    image.fromarray(paper).save(tmp_path / "my_digit.jpg")
    code += "\nassert answer.label == '7' and maps['C1'].shape == (6, 28, 28)\n"
    code += "assert (net.predict(images[:1000]) == labels[:1000]).mean() >= 0.99\n"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0.991" in result.stdout and (tmp_path / "runs").is_dir()


def test_the_first_lines_are_the_two_commands_and_ci_runs_the_second():
    commands = re.search(r"```bash\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert len(commands) == 2
    assert commands[0].endswith("python -m lenet5x.train --data-dir ../shared/data/mnist")
    *_, install, test = commands[1].split(" && ")
    ci = (ROOT / ".ci" / "run").read_text()
    assert install == "pip install -e '.[test]'" and "pip install --quiet -e '.[test]'" in ci
    assert f"\n{test}\n" in ci  # the README's test command, as it is
