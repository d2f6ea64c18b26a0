"""Public datasets (sine_jax/data/fetch.py), offline: archives built here in the published
layout, installed with --archive, and downloads from a local HTTP server (Range resume)."""

import dataclasses
import hashlib
import http.server
import io
import os
import subprocess
import sys
import threading
import zipfile

import pytest

from sine_jax.data import fetch, readers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RATINGS = "".join(f"{u}::{m}::{1 + (u + m) % 5}::{978300000 + 60 * i}\n"
                  for i, (u, m) in enumerate((u, m) for u in range(1, 9) for m in (1, 2, 3, 5)))
MOVIES = "1::Toy Story (1995)::Animation|Comedy\n2::Jumanji (1995)::Adventure\n" \
         "3::Heat (1995)::Action\n5::Casino (1995)::Drama\n"


def _zip(path, files: dict[str, str]) -> str:
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return str(path)


def _ml1m_zip(path, **drop) -> str:
    files = {"ml-1m/ratings.dat": RATINGS, "ml-1m/movies.dat": MOVIES,
             "ml-1m/users.dat": "1::F::1::10::48067\n", "ml-1m/README": "SUMMARY\n"}
    return _zip(path, {k: v for k, v in files.items() if k.split("/")[1] not in drop})


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _trust(monkeypatch, name, path, **changes):
    """Makes SOURCES[name]'s (first) file's published checksum that of PATH."""
    source = fetch.SOURCES[name]
    first = dataclasses.replace(source.downloads[0], sha256=_sha(path), **changes)
    monkeypatch.setitem(fetch.SOURCES, name, dataclasses.replace(
        source, downloads=(first, *source.downloads[1:])))


def test_the_list_names_every_dataset_with_source_checksum_terms_and_command(capsys):
    assert fetch.main(["--list"]) == 0
    out = capsys.readouterr().out
    for name, source in fetch.SOURCES.items():
        assert f"\n{name}: " in f"\n{out}"
        assert source.train_command("data") in out and source.terms in out
        for item in source.downloads:
            assert (item.sha256 or "checksum unknown: computed and shown after download") in out
    assert "https://files.grouplens.org/datasets/movielens/ml-1m.zip (5,917,549 bytes, " \
           "sha256 a6898adb" in out


def test_every_dataset_installs_what_its_config_reads():
    for source in fetch.SOURCES.values():
        installed = [n for d in source.downloads for n in d.installed_names()]
        assert source.data_file in installed, source.name
        config_file = os.path.join(REPO, source.config.split(":")[0])
        assert os.path.isfile(config_file), source.config
        docstring = open(config_file).read().split('"""')[1]
        assert f"python -m sine_jax.data.fetch {source.name}" in docstring, source.config


def test_an_archive_installs_and_the_printed_command_reads_it(tmp_path, monkeypatch, capsys):
    archive = _ml1m_zip(tmp_path / "ml-1m.zip")
    _trust(monkeypatch, "ml-1m", archive)
    dest = tmp_path / "data"
    assert fetch.main(["ml-1m", f"--dest={dest}", f"--archive={archive}"]) == 0
    out = capsys.readouterr().out
    assert sorted(os.listdir(dest / "ml-1m")) == ["README", "movies.dat", "ratings.dat",
                                                  "users.dat"]
    assert (dest / "ml-1m" / "ratings.dat").read_text() == RATINGS
    assert f"sha256 {_sha(archive)} verified" in out
    command = out.strip().splitlines()[-1].strip()
    assert command == (f"python -m sine_jax.main --config=configs/movielens.py "
                       f"--workdir=runs/ml-1m --config.data.path={dest}/ml-1m/ratings.dat")
    log = readers.read_interactions(str(dest / "ml-1m" / "ratings.dat"), "movielens")
    assert len(log.users) == RATINGS.count("\n")
    assert os.path.exists(archive)  # the user's file is left as it was
    assert sorted(os.listdir(dest)) == [".downloads", "ml-1m"]  # no staging left


def test_a_checksum_that_differs_installs_nothing_and_keeps_the_earlier_install(tmp_path):
    dest = tmp_path / "data"
    (dest / "ml-1m").mkdir(parents=True)
    (dest / "ml-1m" / "ratings.dat").write_text("earlier\n")
    archive = _ml1m_zip(tmp_path / "ml-1m.zip")  # not GroupLens's bytes
    proc = subprocess.run(
        [sys.executable, "-m", "sine_jax.data.fetch", "ml-1m", f"--dest={dest}",
         f"--archive={archive}"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"error: {archive}: sha256 {_sha(archive)} is not the published "
        f"{fetch.SOURCES['ml-1m'].downloads[0].sha256} of ml-1m.zip "
        f"(https://files.grouplens.org/datasets/movielens/ml-1m.zip): a damaged or different "
        f"file; delete it and download it again")
    assert (dest / "ml-1m" / "ratings.dat").read_text() == "earlier\n"
    assert sorted(os.listdir(dest)) == [".downloads", "ml-1m"]


def _written(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("make, message", [
    (lambda p: _ml1m_zip(p, **{"ratings.dat": True}), "the archive has no ml-1m/ratings.dat"),
    (lambda p: _written(p, b"PK\x03\x04 not really a zip"), "not a zip archive"),
    (lambda p: _written(p, open(_ml1m_zip(p), "rb").read()[:-200]),
     "not a zip archive"),  # cut short: the central directory is gone
])
def test_a_bad_archive_is_one_line_and_installs_nothing(tmp_path, monkeypatch, capsys, make,
                                                        message):
    archive = make(tmp_path / "ml-1m.zip")
    _trust(monkeypatch, "ml-1m", archive)
    assert fetch.main(["ml-1m", f"--dest={tmp_path}/data", f"--archive={archive}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {archive}: ") and message in err, err
    assert not os.path.exists(tmp_path / "data" / "ml-1m")


def test_a_dataset_without_a_published_checksum_shows_the_computed_one(tmp_path, capsys):
    csv = "1,10,100,pv,1511544070\n1,11,100,pv,1511561733\n"
    archive = _zip(tmp_path / "UserBehavior.csv.zip", {"UserBehavior.csv": csv})
    assert fetch.main(["taobao", f"--dest={tmp_path}/data", f"--archive={archive}"]) == 0
    out = capsys.readouterr().out
    assert f"sha256 {_sha(archive)} computed (no published checksum to check)" in out
    assert (tmp_path / "data" / "taobao" / "UserBehavior.csv").read_text() == csv
    plain = tmp_path / "UserBehavior.csv"  # the file inside the archive, given itself
    plain.write_text(csv)
    assert fetch.main(["taobao", f"--dest={tmp_path}/again", f"--archive={plain}"]) == 0
    assert (tmp_path / "again" / "taobao" / "UserBehavior.csv").read_text() == csv
    assert fetch.main(["taobao", f"--dest={tmp_path}/data"]) == 2
    assert ("taobao cannot be downloaded directly (https://tianchi.aliyun.com/dataset/649)"
            in capsys.readouterr().err)


def test_a_dataset_of_several_files_takes_one_archive_per_file(tmp_path, monkeypatch, capsys):
    txt, attributes = tmp_path / "Toys_and_Games.txt", tmp_path / "Toys_and_Games_item2attributes.json"
    txt.write_text("1 1 2 3\n2 2 3 1\n")
    attributes.write_text('{"1": [1], "2": [2], "3": [1]}')
    source = fetch.SOURCES["amazon-toys"]
    monkeypatch.setitem(fetch.SOURCES, "amazon-toys", dataclasses.replace(source, downloads=(
        dataclasses.replace(source.downloads[0], sha256=_sha(txt)),
        dataclasses.replace(source.downloads[1], sha256=_sha(attributes)))))
    assert fetch.main(["amazon-toys", f"--dest={tmp_path}/data", f"--archive={txt}"]) == 2
    assert "no --archive for Toys_and_Games_item2attributes.json" in capsys.readouterr().err
    assert fetch.main(["amazon-toys", f"--dest={tmp_path}/data", f"--archive={txt}",
                       f"--archive={attributes}"]) == 0
    assert capsys.readouterr().out.strip().endswith(
        f"--config=configs/amazon.py:toys --workdir=runs/amazon-toys "
        f"--config.data.path={tmp_path}/data/amazon-toys/Toys_and_Games.txt")
    assert sorted(os.listdir(tmp_path / "data" / "amazon-toys")) == sorted(
        [txt.name, attributes.name])


class _Server:
    """A local HTTP server of one file with Range support; `cut` bytes into the first
    response it closes the connection."""

    def __init__(self, payload: bytes, cut: int | None):
        self.payload, self.cut, self.ranges = payload, cut, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
                server.ranges.append(start)
                body = server.payload[start:]
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut is not None:
                    body, server.cut = body[: server.cut], None
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/ml-1m.zip"


def test_a_download_is_verified_and_an_interrupted_one_resumes(tmp_path, monkeypatch, capsys):
    archive = _ml1m_zip(tmp_path / "served.zip")
    payload = open(archive, "rb").read()
    server = _Server(payload, cut=300)
    _trust(monkeypatch, "ml-1m", archive, url=server.url, size=len(payload))
    dest = tmp_path / "data"
    try:
        assert fetch.main(["ml-1m", f"--dest={dest}"]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        partial = dest / ".downloads" / "ml-1m.zip.part"
        assert err == (f"error: downloading {server.url} failed (the connection closed after "
                       f"300 of {len(payload):,} bytes); 300 bytes kept in {partial}: rerun the "
                       f"same command to resume, or download the file yourself and pass "
                       f"--archive=FILE")
        assert partial.read_bytes() == payload[:300]
        assert fetch.main(["ml-1m", f"--dest={dest}"]) == 0
        assert server.ranges == [0, 300]  # the second request asked for the rest only
        assert (dest / "ml-1m" / "ratings.dat").read_text() == RATINGS
        assert os.listdir(dest / ".downloads") == []  # the archive is removed once installed
    finally:
        server.httpd.shutdown()


def test_a_downloaded_file_that_fails_its_checksum_is_removed(tmp_path, monkeypatch, capsys):
    archive = _ml1m_zip(tmp_path / "served.zip")
    server = _Server(open(archive, "rb").read(), cut=None)
    source = fetch.SOURCES["ml-1m"]
    monkeypatch.setitem(fetch.SOURCES, "ml-1m", dataclasses.replace(source, downloads=(
        dataclasses.replace(source.downloads[0], url=server.url),)))
    try:
        assert fetch.main(["ml-1m", f"--dest={tmp_path}"]) == 2
    finally:
        server.httpd.shutdown()
    assert "is not the published a6898adb" in capsys.readouterr().err
    assert os.listdir(tmp_path / ".downloads") == [] and not os.path.exists(tmp_path / "ml-1m")


def test_bad_arguments_are_one_line(tmp_path, capsys):
    assert fetch.main([]) == 2
    assert "give a dataset: ml-100k, ml-1m" in capsys.readouterr().err
    assert fetch.main(["ml-1m", f"--archive={tmp_path}/absent.zip"]) == 2
    assert f"--archive={tmp_path}/absent.zip: no such file" in capsys.readouterr().err
    assert fetch.main(["ml-1m", "ml-100k"]) == 2
    assert "unexpected arguments: ml-100k" in capsys.readouterr().err
