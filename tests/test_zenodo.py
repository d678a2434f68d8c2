"""FSDKaggle2018 from its public release: archives in the release's exact layout, made here from generated
WAV files, copied in by hand or served by a local HTTP server in Zenodo's API shape."""
import hashlib
import http.server
import json
import re
import socket
import threading
import zipfile

import numpy as np
import pandas as pd
import pytest

from src import data
from src.base.errors import DataError
from src.dataset import zenodo
from src.dataset.tables import Dataset


def make_release(dataset, folder):
    """The release's three archives from a generated dataset: audio under FSDKaggle2018.audio_*/, the
    post-competition tables with their extra columns, the scored test clips split Public/Private, and one
    unscored test clip (the padding the competition added)."""
    folder.mkdir(parents=True, exist_ok=True)
    train = pd.read_csv(dataset / "train.csv")
    test = pd.read_csv(dataset / "test_labels.csv")
    test["usage"] = ["Public" if i % 3 == 0 else "Private" for i in range(len(test))]
    with zipfile.ZipFile(folder / "FSDKaggle2018.audio_train.zip", "w") as zf:
        for fname in train.fname:
            zf.write(dataset / "audio_train" / fname, f"FSDKaggle2018.audio_train/{fname}")
    with zipfile.ZipFile(folder / "FSDKaggle2018.audio_test.zip", "w") as zf:
        for fname in test.fname:
            zf.write(dataset / "audio_test" / fname, f"FSDKaggle2018.audio_test/{fname}")
        zf.write(dataset / "audio_test" / test.fname[0], "FSDKaggle2018.audio_test/padding0.wav")
    meta_train = train.assign(freesound_id=range(1000, 1000 + len(train)), license="Attribution")
    meta_test = test[["fname", "label", "usage"]].assign(freesound_id=range(len(test)), license="CC0")
    with zipfile.ZipFile(folder / "FSDKaggle2018.meta.zip", "w") as zf:
        zf.writestr("FSDKaggle2018.meta/train_post_competition.csv", meta_train.to_csv(index=False))
        zf.writestr("FSDKaggle2018.meta/test_post_competition_scoring_clips.csv", meta_test.to_csv(index=False))
    return train, test


def test_release_copied_in_becomes_the_layout(clean_dataset, tmp_path, capsys):
    target = tmp_path / "fsd2018"
    train, test = make_release(clean_dataset, target)
    assert data.main(["--data-dir", str(target)]) == 0
    assert pd.read_csv(target / "train.csv").columns.tolist() == ["fname", "label", "manually_verified"]
    pd.testing.assert_frame_equal(pd.read_csv(target / "train.csv"), train)
    assert pd.read_csv(target / "sample_submission.csv").fname.tolist() == test.fname.tolist()  # no padding clip
    pd.testing.assert_frame_equal(pd.read_csv(target / "test_labels.csv"), test)
    assert (target / "audio_train").is_symlink() and (target / "audio_test" / "padding0.wav").exists()
    dataset = Dataset.load(target)
    assert dataset.test_usage.tolist() == test.usage.tolist()
    assert f"{len(train)} train clips in 3 labels, {len(test)} test clips" in capsys.readouterr().out


def test_usage_other_than_public_or_private_names_the_row(clean_dataset):
    truth = pd.read_csv(clean_dataset / "test_labels.csv").assign(usage="Public")
    truth.loc[2, "usage"] = "Ignored"
    truth.to_csv(clean_dataset / "test_labels.csv", index=False)
    with pytest.raises(DataError, match=r"test_labels.csv, row 4 \(test02.wav\): usage 'Ignored'"):
        Dataset.load(clean_dataset)


class Zenodo:
    """A local server answering Zenodo's record API and serving the record's files; `damage` serves one
    file with a byte changed (its listed md5 is the true one)."""

    def __init__(self, folder, damage=None):
        self.folder, self.damage, self.requests = folder, damage, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                if self.path == f"/api/records/{zenodo.RECORD}":
                    body = json.dumps({"id": int(zenodo.RECORD), "files": server.listing()}).encode()
                elif self.path.startswith("/files/"):
                    body = (server.folder / self.path[len("/files/"):]).read_bytes()
                    if self.path.endswith(str(server.damage)):
                        body = bytes([body[0] ^ 1]) + body[1:]
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def listing(self):
        return [{"key": p.name, "size": p.stat().st_size,
                 "checksum": "md5:" + hashlib.md5(p.read_bytes()).hexdigest(),
                 "links": {"self": f"{self.url}/files/{p.name}"}} for p in sorted(self.folder.glob("*.zip"))]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.readme("src.data --source --download")
def test_download_checks_checksums_and_writes_the_layout(clean_dataset, tmp_path):
    served = tmp_path / "served"
    _, test = make_release(clean_dataset, served)
    server = Zenodo(served)
    target = tmp_path / "fsd2018"
    try:
        argv = ["--source", "zenodo", "--download", "--zenodo-url", server.url, "--data-dir", str(target)]
        assert data.main(argv) == 0
        for name in zenodo.ARCHIVES:
            assert (target / name).read_bytes() == (served / name).read_bytes()
        assert pd.read_csv(target / "test_labels.csv").usage.tolist() == test.usage.tolist()
        fetched = len(server.requests)
        assert data.main(argv) == 0  # archives already here and whole: only the listing is asked for again
        assert len(server.requests) == fetched + 1
    finally:
        server.close()


def test_damaged_download_keeps_nothing(clean_dataset, tmp_path):
    served = tmp_path / "served"
    make_release(clean_dataset, served)
    server = Zenodo(served, damage="FSDKaggle2018.meta.zip")
    target = tmp_path / "fsd2018"
    try:
        with pytest.raises(DataError, match=r"FSDKaggle2018.meta.zip arrived damaged: its md5 is \w+, Zenodo lists"):
            zenodo.download(target, base_url=server.url)
    finally:
        server.close()
    assert not (target / "FSDKaggle2018.meta.zip").exists()
    assert not list(target.glob(".*.tmp"))  # no temporary file left behind


def test_unreachable_zenodo_says_what_to_do(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DataError, match=r"(?s)Could not download FSDKaggle2018 from Zenodo \(URLError.*copy them into"):
        zenodo.download(tmp_path / "d", base_url=f"http://127.0.0.1:{port}")


def test_kaggle_instructions_use_the_documented_cli_form():
    text = data.HOW_TO_DOWNLOAD.format(reason="no credentials found", competition=data.COMPETITION, data_dir="data")
    assert "kaggle competitions download freesound-audio-tagging -p data" in text and " -c " not in text


def test_blend_and_inspect_report_the_2018_leaderboards(clean_dataset, tmp_path, capsys):
    from test_blend import LABELS, two_folds, write_fold

    from src import blend, inspect_oof

    truth = pd.read_csv(clean_dataset / "test_labels.csv")
    truth["usage"] = ["Public", "Public", "Private", "Private", "Private", "Private"]
    truth.to_csv(clean_dataset / "test_labels.csv", index=False)
    paths, folds, train, test, y = two_folds(clean_dataset, tmp_path)
    y_test = truth.label.map(LABELS.index).to_numpy()
    # Public clips: the true label first (1); private: second (1/2), except one third (1/3).
    rank = np.array([0, 0, 1, 1, 1, 2])
    probs = np.full((len(test), 3), 0.1)
    probs[np.arange(len(test)), y_test] = [0.8, 0.8, 0.3, 0.3, 0.3, 0.2]
    probs[np.arange(len(test)), (y_test + 1) % 3] = np.where(rank == 0, 0.1, 0.6)
    probs[np.arange(len(test)), (y_test + 2) % 3] = np.where(rank == 2, 0.5, 0.1)
    for k in (0, 1):
        rows = (folds.fold == k).to_numpy()
        write_fold(paths, "a", k, train.fname[rows], np.eye(3)[y][rows] * 0.7 + 0.1, test.fname, probs)
    row = blend.blend(paths, ["a"])["rows"][0]
    assert row["test_map3_public"] == pytest.approx(1.0)
    assert row["test_map3_private"] == pytest.approx((0.5 * 3 + 1 / 3) / 4)
    assert row["test_map3"] == pytest.approx((2 + 0.5 * 3 + 1 / 3) / 6)
    assert blend.main(["a", "--data-dir", str(clean_dataset), "--out-dir", str(paths.out_dir)]) == 0
    out = capsys.readouterr().out
    assert "public LB  private LB" in out and "1st 0.9538" in out
    assert inspect_oof.main(["a", "--data-dir", str(clean_dataset), "--out-dir", str(paths.out_dir)]) == 0
    out = capsys.readouterr().out
    assert "public leaderboard 1.0000, private leaderboard 0.4583" in out


def test_a_bad_usage_in_the_release_names_the_release_file_and_its_fix_works(clean_dataset, tmp_path, capsys):
    """test_labels.csv is rewritten from the release's table, so the error names that table (and its
    archive); the download it suggests replaces an archive that is not Zenodo's."""
    served = tmp_path / "served"
    make_release(clean_dataset, served)
    target = tmp_path / "fsd2018"
    target.mkdir()
    for name in zenodo.ARCHIVES:
        (target / name).write_bytes((served / name).read_bytes())
    with zipfile.ZipFile(served / "FSDKaggle2018.meta.zip") as zf:
        tables = {n: zf.read(n) for n in zf.namelist()}
    member = f"{zenodo.META}/{zenodo.TEST_META}"
    tables[member] = tables[member].replace(b",Private,", b",Ignored,", 1)
    with zipfile.ZipFile(target / "FSDKaggle2018.meta.zip", "w") as zf:   # a doctored copy of the archive
        for name, body in tables.items():
            zf.writestr(name, body)
    assert data.main(["--data-dir", str(target)]) == 2
    message = capsys.readouterr().err
    assert re.search(r"test_post_competition_scoring_clips.csv, row \d+ \(test\d+.wav\): usage 'Ignored'", message)
    server = Zenodo(served)
    try:
        command = message.split("`")[1].split()                     # the command the message suggests
        assert command[:3] == ["python", "-m", "src.data"] and "--download" in command
        assert data.main(command[3:] + ["--zenodo-url", server.url]) == 0
    finally:
        server.close()
    assert set(pd.read_csv(target / "test_labels.csv").usage) == {"Public", "Private"}
