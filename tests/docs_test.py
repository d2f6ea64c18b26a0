"""The docs cannot go stale: every command of README.md, docs/ and the configs' docstrings is
checked (its tool exists, its flags and config fields parse as the tool parses them, the
configs and data paths it names exist), the README's first-hour and recommend commands run
as written at tiny size, the output shown for them has the form the code prints, and the
docs use no words a user cannot look up."""

import ast
import dataclasses
import glob
import json
import os
import re
import shlex
import subprocess
import sys
import zipfile

import pytest

from sine_jax import run_config
from sine_jax.data import fetch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(REPO, "..", "shared", "data")
DOCS = ["README.md", *sorted(os.path.relpath(p, REPO) for p in glob.glob(
    os.path.join(REPO, "docs", "**", "*.md"), recursive=True))]
CONFIGS = sorted(os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "configs", "*.py")))
# Tiny sizes appended to a documented training command when a test runs it.
TINY = ["--config.model.embed_dim=8", "--config.model.num_prototypes=8",
        "--config.train.num_epochs=1", "--config.train.batch_size=16",
        "--config.checkpoint.every_steps=1000", "--config.train.log_every_steps=5"]


@dataclasses.dataclass
class Command:
    where: str  # file:line
    argv: list[str]


def _expand(text: str, env: dict[str, str]) -> str:
    """$NAME and ${NAME} replaced by their values (an undefined one, e.g. a loop variable
    described in prose, by 0)."""
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: env.get(m[1], "0"), text)


def shell_commands(text: str, where: str, first_line: int, env: dict[str, str]) -> list[Command]:
    """The simple commands of a shell snippet, as bash would run them: continuation lines
    joined, comments dropped, variables expanded (assignments update `env`), `;`, `&&`, `|`
    and `&` separating commands, `for X in A ...; do` setting X to its first value, leading
    VAR=value environment settings and `/usr/bin/time -v` dropped."""
    commands = []
    lines = text.split("\n")
    number = 0
    while number < len(lines):
        line, start = lines[number], number
        while line.endswith("\\") and number + 1 < len(lines):
            number += 1
            line = line[:-1] + " " + lines[number]
        number += 1
        lexer = shlex.shlex(_expand(line, env), posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        words: list[str] = []
        for token in [*lexer, ";"]:
            if token and set(token) <= set(";&|"):
                commands += _simple(words, f"{where}:{first_line + start}", env)
                words = []
            else:
                words.append(token)
    return commands


def _simple(words: list[str], where: str, env: dict[str, str]) -> list[Command]:
    if words[:1] == ["for"] and len(words) >= 4 and words[2] == "in":
        env[words[1]] = words[3]
        return []
    while words and words[0] in ("do", "then"):
        words = words[1:]
    assignments = 0
    while assignments < len(words) and re.fullmatch(r"[A-Za-z_]\w*=.*", words[assignments]):
        assignments += 1
    if assignments == len(words):  # NAME=value ...: shell variables
        env.update(w.split("=", 1) for w in words)
        return []
    words = words[assignments:]
    if os.path.basename(words[0]) == "time":  # /usr/bin/time -v CMD: CMD
        words = words[1:]
        while words and words[0].startswith("-"):
            words = words[1:]
    if words[0] in ("done", "wait", "fi"):
        return []
    return [Command(where, words)]


def fenced_blocks(path: str) -> list[tuple[int, str, str]]:
    """(first line, language, text) of each fenced code block of a markdown file."""
    text = open(os.path.join(REPO, path)).read()
    return [(text[: m.start(2)].count("\n") + 1, m[1], m[2])
            for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S)]


def doc_commands() -> list[Command]:
    """Every command of the docs' bash blocks, their indented `$ command` examples and the
    configs' docstrings."""
    commands = []
    for path in DOCS:
        env: dict[str, str] = {}  # a file's variables carry over from block to block
        for line, language, text in fenced_blocks(path):
            if language == "bash":
                commands += shell_commands(text, path, line, env)
        lines = open(os.path.join(REPO, path)).read().split("\n")
        for number, line in enumerate(lines):  # indented `    $ command` examples
            if line.startswith("    $ "):
                end = number
                while lines[end].endswith("\\"):
                    end += 1
                text = "\n".join(l.strip() for l in lines[number:end + 1])
                commands += shell_commands(text.removeprefix("$ "), path, number + 1, env)
    for path in CONFIGS:
        body = ast.parse(open(os.path.join(REPO, path)).read()).body
        if not (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value,
                                                                       ast.Constant)):
            continue  # no docstring
        docstring, first = body[0].value.value, body[0].lineno
        for offset, line in enumerate(docstring.split("\n")):
            if line.startswith("  python ") or line.startswith("  pip "):
                rest = docstring.split("\n")[offset:]
                end = next(i for i, l in enumerate(rest) if not l.endswith("\\")) + 1
                commands += shell_commands("\n".join(rest[:end]).strip(), path, first + offset,
                                           {})
    return commands


def _tool(argv: list[str]) -> str | None:
    """'sine_jax.main', 'sine_jax.data.fetch' or 'launch/x.py' for a python command line."""
    if os.path.basename(argv[0]) not in ("python", "python3") or len(argv) < 2:
        return None
    if argv[1] == "-m" and len(argv) > 2:
        return argv[2]
    return argv[1] if argv[1].endswith(".py") else None


def _extras() -> set[str]:
    text = open(os.path.join(REPO, "pyproject.toml")).read()
    section = text.split("[project.optional-dependencies]")[1].split("\n[")[0]
    return set(re.findall(r"^(\w+) = ", section, re.M))


def _fetched_files() -> set[str]:
    return {f"data/{s.name}/{n}" for s in fetch.SOURCES.values()
            for d in s.downloads for n in d.installed_names()}


def check_other(command: Command) -> str | None:
    """A problem with a command that is not one of sine_jax's tools, or None."""
    argv = command.argv
    program = os.path.basename(argv[0])
    if program in ("python", "python3"):
        if argv[1:3] == ["-m", "pytest"] or argv[1:3] == ["-m", "venv"] or argv[1] == "-c":
            return None
        return f"unknown python command {argv[1:3]}"
    if program == "pip":
        for arg in argv[2:]:
            match = re.fullmatch(r"\.\[([\w,]+)\]", arg)
            if match and not set(match[1].split(",")) <= _extras():
                return f"pip extra {arg} is not in pyproject.toml"
        return None
    if program == "tensorboard":
        return None if argv[1:2] == ["--logdir"] or argv[1].startswith("--logdir") else (
            "tensorboard needs --logdir")
    if program == "bash":
        return None if os.path.isfile(os.path.join(REPO, argv[1])) else f"no {argv[1]}"
    if program == "mkdir":
        return None
    if program == "cp":
        sources = [a for a in argv[1:-1] if not a.startswith("-")]
        missing = [s for s in sources if not os.path.exists(os.path.join(REPO, s))]
        return f"cp: no {missing[0]}" if missing else None
    return f"the checker does not know the command {argv[0]!r}; teach it or drop it"


def data_path_problem(path: str | None) -> str | None:
    """Where a documented data path may point: a file that `sine_jax.data.fetch` installs (or
    the user's own file under data/, outside the fetched datasets' folders), the shared data of the development machine (when present), a scratch file under /tmp,
    or the synthetic data (no path)."""
    if not path:
        return None
    if path.startswith("data/"):  # a fetched dataset's file, or the user's own data there
        fetched = path.split("/")[1] in fetch.SOURCES
        return None if not fetched or path in _fetched_files() else (
            f"data.path={path} is not a file that python -m sine_jax.data.fetch installs")
    if path.startswith("../shared/data/"):
        exists = os.path.exists(os.path.join(REPO, path))
        return None if exists or not os.path.isdir(SHARED) else f"no such file {path}"
    if path.startswith("/tmp/"):
        return None
    return f"data.path={path}: use data/NAME/FILE (fetched) or a path the doc creates"


def test_the_shell_reader_reads_as_bash_would():
    env: dict[str, str] = {}
    text = ('D=--set=data.path=x.dat  # a comment\nT="python a.py $D --b=1"\n'
            "$T --c=2 && python b.py \\\n    --d=${D}\nfor SEED in 7 8; do\n"
            "  JAX_X=1 python c.py --seed=$SEED &\ndone; wait\n/usr/bin/time -v python d.py")
    assert [c.argv for c in shell_commands(text, "f", 1, env)] == [
        ["python", "a.py", "--set=data.path=x.dat", "--b=1", "--c=2"],
        ["python", "b.py", "--d=--set=data.path=x.dat"],
        ["python", "c.py", "--seed=7"],
        ["python", "d.py"],
    ]
    assert [c.where for c in shell_commands("a\n\nb \\\n c\nd", "f", 10, {})] == [
        "f:10", "f:12", "f:14"]


def test_every_documented_command_parses_and_names_what_exists():
    commands = doc_commands()
    assert len(commands) > 80  # README, docs/*.md and the configs' docstrings
    tools = [c for c in commands if _tool(c.argv) and (
        _tool(c.argv).startswith("sine_jax.") or _tool(c.argv).startswith("launch/"))]
    problems = [f"{c.where}: {check_other(c)}" for c in commands if c not in tools
                and check_other(c)]
    requests = []
    for command in tools:
        tool = _tool(command.argv)
        if tool.startswith("launch/") and not os.path.isfile(os.path.join(REPO, tool)):
            problems.append(f"{command.where}: no {tool}")
        elif tool not in ("sine_jax.main", "sine_jax.data.fetch") and not tool.startswith(
                "launch/"):
            problems.append(f"{command.where}: unknown tool {tool}")
        else:
            requests.append((command, tool, command.argv[3 if tool.startswith("sine_jax")
                                                         else 2:]))
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "tests", "doc_commands.py")],
        input=json.dumps([{"tool": t, "argv": a} for _, t, a in requests]),
        capture_output=True, text=True, cwd=REPO, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for (command, _, _), result in zip(requests, json.loads(proc.stdout), strict=True):
        if result["error"]:
            problems.append(f"{command.where}: {shlex.join(command.argv)}: {result['error']}")
        elif data_path_problem(result["data_path"]):
            problems.append(f"{command.where}: {data_path_problem(result['data_path'])}")
    assert not problems, "\n".join(problems)


def test_the_checker_finds_stale_commands():
    """A misspelt field, a missing config, a bad fetch name and an unfetchable path fail."""
    stale = [
        ["--config=configs/movielens.py", "--workdir=runs/x", "--config.model.num_interest=2"],
        ["--config=configs/nope.py", "--workdir=runs/x"],
        ["--workdir=runs/x", "--mode=recommend"],
    ]
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "tests", "doc_commands.py")],
        input=json.dumps([{"tool": "sine_jax.main", "argv": a} for a in stale]
                         + [{"tool": "sine_jax.data.fetch", "argv": ["ml-2m"]},
                            {"tool": "launch/sweep.py",
                             "argv": ["--config=configs/movielens.py", "--workdir=runs/s",
                                      "--grid=model.num_interest=2,4"]}]),
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    errors = [r["error"] for r in json.loads(proc.stdout)]
    assert all(errors), errors
    assert "num_interest" in errors[0] and "nope.py" in errors[1]
    assert data_path_problem("data/ml-1m/ratings.csv") and data_path_problem("/path/to/x")
    assert data_path_problem("data/ml-1m/ratings.dat") is None
    assert check_other(Command("f", ["pip", "install", "-e", ".[gpu]"]))


def test_the_readme_lists_the_fields_that_may_change_on_resume():
    names = list(run_config.RESUMABLE_FIELDS) + [f"{p}*" for p in run_config.RESUMABLE_PREFIXES]
    readme = open(os.path.join(REPO, "README.md")).read()
    sentence = readme[readme.index("which may change on resume:"):]
    listed = re.findall(r"`([a-z_]+\.[a-z_*]+)`", sentence[:sentence.index(" field (")])
    assert sorted(listed) == sorted(names)


def test_ci_runs_the_readme_first_commands():
    (_, _, first), *_ = fenced_blocks("README.md")
    ci = open(os.path.join(REPO, ".ci", "run")).read().splitlines()
    for line in first.strip().splitlines():  # as written, after any VAR=value settings
        assert any(re.fullmatch(rf"([A-Z_]+=\S+ )*{re.escape(line)}", c) for c in ci), line


def test_no_words_a_user_cannot_look_up():
    """No design notes, stack notes, style guides or tracker issues a user does not have."""
    names = re.compile("|".join(map(re.escape, ["DESIGN" + ".md", "STACK" + "-NOTES",
                                                "STYLE" + ".md"])))
    tracker = re.compile(r"\bthe issue\b|\bissues? #?\d+", re.I)
    tracked = subprocess.run(["git", "ls-files"], capture_output=True, text=True, cwd=REPO,
                             check=True).stdout.split()
    found = []
    for path in tracked:
        if path.endswith((".md", ".py", ".toml", ".cff", ".sh")) or path == ".ci/run":
            for number, line in enumerate(open(os.path.join(REPO, path), errors="replace"), 1):
                if names.search(line) or tracker.search(line):
                    found.append(f"{path}:{number}: {line.strip()[:100]}")
    assert not found, "\n".join(found)


def test_robustness_probes_name_tools_and_tests_that_exist():
    text = open(os.path.join(REPO, "docs", "robustness.md")).read()
    env: dict[str, str] = {}
    shell_commands(fenced_blocks("docs/robustness.md")[0][2], "docs/robustness.md", 1, env)
    for span in re.findall(r"`(R=\"[^`]*\")`", text):
        shell_commands(span, "docs/robustness.md", 1, env)
    tests = {}
    for path in glob.glob(os.path.join(REPO, "tests", "*_test.py")):
        tests[os.path.basename(path)] = set(re.findall(r"^def (test_\w+)", open(path).read(),
                                                       re.M))
    problems, probes = [], 0
    for row in re.findall(r"^\| (.+) \|$", text, re.M):
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", row)]
        for span in re.findall(r"`([^`]+)`", cells[0]):
            if not re.match(r"(\$M|\$R|python |echo .*\| *\$R)", span):
                continue
            probes += 1
            for command in shell_commands(span.replace("\\|", "|"), "probe", 1, dict(env)):
                tool = _tool(command.argv)
                if tool and tool.startswith("launch/") and not os.path.isfile(
                        os.path.join(REPO, tool)):
                    problems.append(f"{span}: no {tool}")
        for name in re.findall(r"`(?:(\w+_test\.py)::)?(test_\w+)`", cells[-1] if len(
                cells) > 2 else ""):
            file, function = name
            where = [file] if file else ["robustness_test.py"]
            if not any(function in tests.get(f, set()) for f in where):
                problems.append(f"{'::'.join(filter(None, name))} is not a test in {where[0]}")
    assert probes > 20
    assert not problems, "\n".join(problems)


# --- The README's commands, run as written at tiny size -------------------------------

def _readme_block(heading: str, index: int = 0) -> str:
    readme = open(os.path.join(REPO, "README.md")).read()
    section = readme[readme.index(heading):]
    return re.findall(r"^```bash\n(.*?)^```", section, re.M | re.S)[index]


def _run(argv: list[str], cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_NUM_CPU_DEVICES="1",
               PYTHONPATH=REPO)
    return subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """A directory like the repository root (configs/, launch/), where commands write runs/
    and data/."""
    for name in ("configs", "launch"):
        os.symlink(os.path.join(REPO, name), tmp_path / name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _fake_ml1m(path) -> str:
    """ml-1m.zip in GroupLens's layout: 60 users x 12 ratings of 40 movies, among them the
    README's history ids."""
    movies = [1193, 661, 914, 3408, 2355] + list(range(1, 36))
    ratings = "".join(
        f"{u}::{movies[(u * 7 + j * 3) % len(movies)]}::{1 + j % 5}::{978300000 + 100 * j}\n"
        for u in range(1, 61) for j in range(12))
    titles = "".join(f"{m}::Movie {m} (1999)::{'Drama' if m % 2 else 'Comedy'}\n" for m in movies)
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in {"ratings.dat": ratings, "movies.dat": titles,
                           "users.dat": "1::F::1::10::48067\n", "README": "fake\n"}.items():
            archive.writestr(f"ml-1m/{name}", text)
    return str(path)


def test_the_readme_first_hour_runs_as_written(scratch, monkeypatch, capsys):
    commands = shell_commands(_readme_block("## Real data in one hour"), "README.md", 1, {})
    assert [_tool(c.argv) or c.argv[0] for c in commands] == [
        "sine_jax.data.fetch", "sine_jax.main", "sine_jax.main", "sine_jax.main",
        "sine_jax.main", "pip", "tensorboard"]
    fetch_command, train, evaluate, export, recommend = (c.argv for c in commands[:5])
    archive = _fake_ml1m(scratch / "ml-1m.zip")  # no data host here: the offline path
    source = fetch.SOURCES["ml-1m"]
    monkeypatch.setitem(fetch.SOURCES, "ml-1m", dataclasses.replace(source, downloads=(
        dataclasses.replace(source.downloads[0], sha256=fetch.sha256_of(archive)),)))
    assert fetch.main([*fetch_command[3:], f"--archive={archive}"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()[-1].split()
    assert printed == train  # the command the fetch prints is the README's next one
    trained = _run(train + TINY, scratch)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "results: runs/ml-1m/results.json (best step" in trained.stderr
    evaluated = _run(evaluate, scratch)  # the recorded config: data path and all
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads(evaluated.stdout)["test"] == json.loads(trained.stdout)["test"]
    exported = _run(export, scratch)
    assert exported.returncode == 0, exported.stderr[-3000:]
    proc = _run(recommend, scratch)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (line,) = proc.stdout.splitlines()
    result = json.loads(line)
    assert len(result["items"]) == 10 and len(result["explain"]["interests"]) == 4
    assert (scratch / "runs" / "ml-1m" / "tensorboard").is_dir()


def test_the_readme_recommend_example_prints_what_the_readme_shows(scratch):
    first = shell_commands(fenced_blocks("README.md")[0][2], "README.md", 1, {})
    train = next(c.argv for c in first if _tool(c.argv) == "sine_jax.main")
    trained = _run(train + ["--config.data.synthetic.num_users=300",
                            "--config.data.synthetic.num_items=1000", *TINY], scratch)
    assert trained.returncode == 0, trained.stderr[-3000:]
    block = _readme_block("## Recommending from a trained model")
    for command in shell_commands(block, "README.md", 1, {}):
        proc = _run(command.argv, scratch)
        assert proc.returncode == 0, proc.stderr[-3000:]
    readme = open(os.path.join(REPO, "README.md")).read()
    section = readme[readme.index("## Recommending from a trained model"):]
    blocks = re.findall(r"^```(\w*)\n(.*?)^```", section, re.M | re.S)
    (snippet, shown) = next((text, blocks[i + 1][1]) for i, (language, text) in
                            enumerate(blocks) if language == "python")
    proc = _run(["python", "-c", snippet], scratch)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The form of the output, shown and printed: 5 items with their titles, then one line
    # per interest (K = 4): prototype, weight, the history items assigned to it.
    items = re.compile(r"\[(\d+, ){4}\d+\] \[('item \d+ \(cat \d+\)', ){4}'item \d+ \(cat \d+\)'\]")
    interest = re.compile(r"(\d+) (\d+\.\d+) \[((?:\d+, )*\d*)\]")
    history = set(json.loads(re.search(r"history = (\[.*?\])", snippet)[1]))
    for output in (shown, proc.stdout):
        first, *rest = output.strip().splitlines()
        assert items.fullmatch(first), first
        assert len(rest) == 4 and all(interest.fullmatch(line) for line in rest), rest
        assigned = [int(i) for line in rest for i in
                    filter(None, interest.fullmatch(line)[3].split(", "))]
        assert len(assigned) == len(set(assigned)) and set(assigned) <= history
        assert sum(float(interest.fullmatch(line)[2]) for line in rest) == pytest.approx(
            1, abs=0.01)
