"""The Hub stand-in's history endpoints, driven by the REAL huggingface_hub client: one commit per snapshot,
any earlier commit readable by oid, super-squash dropping old commits, injected failures.

A backup feature relies on exactly these behaviours, so they are checked against the client rather than by
calling the stand-in directly: a header the client needs but the stand-in omits fails here, not in the feature.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, RevisionNotFoundError

from bench.harness.hub_standin import HubStandin

TOKEN, READ_TOKEN, OTHER_TOKEN = "hf_writeTokenForTests0123456789", "hf_readOnlyTokenForTests0123456", "hf_bobTok"
REPO = "ada/backups"


@pytest.fixture
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubStandin]:
    """The stand-in with the real client pointed at it (conftest sets offline mode: lifted here)."""
    import huggingface_hub.constants

    server = HubStandin(
        tmp_path / "hub", {TOKEN: ("ada", "write"), READ_TOKEN: ("ada", "read"), OTHER_TOKEN: ("bob", "write")}
    ).start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield server
    server.stop()


@pytest.fixture
def api(standin: HubStandin) -> HfApi:
    return HfApi(endpoint=standin.url, token=TOKEN)


def two_snapshots(api: HfApi) -> tuple[str, str]:
    """A private dataset repo with two commits: v1 then v2 of state.json, plus a file only the first has."""
    api.create_repo(REPO, repo_type="dataset", private=True)
    first = api.create_commit(
        REPO,
        repo_type="dataset",
        commit_message="snapshot 1",
        operations=[CommitOperationAdd("state.json", b'{"v": 1}'), CommitOperationAdd("db/old.parquet", b"old rows")],
    )
    second = api.create_commit(
        REPO,
        repo_type="dataset",
        commit_message="snapshot 2",
        commit_description="second backup",
        operations=[CommitOperationAdd("state.json", b'{"v": 2}'), CommitOperationDelete("db/old.parquet")],
    )
    return first.oid, second.oid


def test_commits_are_listed_newest_first_and_each_one_stays_readable(api, standin, tmp_path):
    first, second = two_snapshots(api)
    commits = api.list_repo_commits(REPO, repo_type="dataset")
    assert [(c.commit_id, c.title, c.message, c.authors) for c in commits] == [
        (second, "snapshot 2", "second backup", ["ada"]),
        (first, "snapshot 1", "", ["ada"]),
    ]
    assert commits[0].created_at >= commits[1].created_at
    assert [c.commit_id for c in api.list_repo_commits(REPO, repo_type="dataset", revision=first)] == [first]

    old = Path(
        hf_hub_download(
            REPO,
            "state.json",
            repo_type="dataset",
            revision=first,
            endpoint=standin.url,
            token=TOKEN,
            cache_dir=tmp_path / "cache",
        )
    )
    head = Path(
        hf_hub_download(
            REPO, "state.json", repo_type="dataset", endpoint=standin.url, token=TOKEN, cache_dir=tmp_path / "cache"
        )
    )
    assert (old.read_bytes(), head.read_bytes()) == (b'{"v": 1}', b'{"v": 2}')

    # restoring into the same folder twice, old then new: local_dir must follow the revision, not keep files
    restore = tmp_path / "restore"
    snapshot_download(REPO, repo_type="dataset", revision=first, local_dir=restore, endpoint=standin.url, token=TOKEN)
    assert (restore / "state.json").read_bytes() == b'{"v": 1}' and (restore / "db/old.parquet").is_file()
    snapshot_download(
        REPO, repo_type="dataset", revision="main", local_dir=tmp_path / "head", endpoint=standin.url, token=TOKEN
    )
    assert {p.name for p in (tmp_path / "head").iterdir() if p.is_file()} == {"state.json"}
    assert (tmp_path / "head/state.json").read_bytes() == b'{"v": 2}'

    assert api.dataset_info(REPO, revision=first[:10]).sha == first  # a unique prefix resolves too
    assert {f.path for f in api.list_repo_tree(REPO, repo_type="dataset", revision=first)} == {"db", "state.json"}
    assert api.list_repo_files(REPO, repo_type="dataset", revision=first) == ["db/old.parquet", "state.json"]


def test_super_squash_keeps_the_head_as_one_commit_and_old_oids_are_gone(api, standin, tmp_path):
    first, second = two_snapshots(api)
    api.super_squash_history(REPO, repo_type="dataset", commit_message="keep only the latest backup")
    commits = api.list_repo_commits(REPO, repo_type="dataset")
    assert [c.title for c in commits] == ["keep only the latest backup"] and commits[0].commit_id not in (first, second)
    assert api.dataset_info(REPO).sha == commits[0].commit_id
    assert api.list_repo_files(REPO, repo_type="dataset") == ["state.json"]
    with pytest.raises(RevisionNotFoundError):
        api.dataset_info(REPO, revision=first)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(
            REPO,
            "state.json",
            repo_type="dataset",
            revision=second,
            endpoint=standin.url,
            token=TOKEN,
            cache_dir=tmp_path / "cache",
        )
    with pytest.raises(RevisionNotFoundError):
        api.list_repo_commits(REPO, repo_type="dataset", revision=first)
    assert standin.files_on_disk(REPO, "dataset") == {"state.json": b'{"v": 2}'}


def test_private_history_needs_a_token_that_reads_it_and_squash_needs_write(api, standin):
    first, _ = two_snapshots(api)
    assert len(HfApi(endpoint=standin.url, token=READ_TOKEN).list_repo_commits(REPO, repo_type="dataset")) == 2
    with pytest.raises(HfHubHTTPError) as caught:  # someone else's token: the repo does not exist
        HfApi(endpoint=standin.url, token=OTHER_TOKEN).list_repo_commits(REPO, repo_type="dataset")
    assert caught.value.response.status_code == 404
    with pytest.raises(HfHubHTTPError) as caught:
        HfApi(endpoint=standin.url, token=READ_TOKEN).super_squash_history(REPO, repo_type="dataset")
    assert caught.value.response.status_code == 403
    assert len(standin.repo(REPO, "dataset").commits) == 2


def test_injected_failures_hit_one_call_then_the_retry_succeeds(api, standin):
    api.create_repo(REPO, repo_type="dataset")
    standin.fail("commit", 503)
    add = [CommitOperationAdd("state.json", b"{}")]
    with pytest.raises(HfHubHTTPError) as caught:  # create_commit itself does not retry
        api.create_commit(REPO, repo_type="dataset", commit_message="backup", operations=add)
    assert caught.value.response.status_code == 503 and standin.repo(REPO, "dataset").commits == []
    api.create_commit(REPO, repo_type="dataset", commit_message="backup", operations=add)

    standin.fail("squash", 500)
    with pytest.raises(HfHubHTTPError):
        api.super_squash_history(REPO, repo_type="dataset")
    standin.fail("commits", 404)  # 5xx would be retried inside the client
    with pytest.raises(HfHubHTTPError):
        api.list_repo_commits(REPO, repo_type="dataset")
    api.super_squash_history(REPO, repo_type="dataset")
    titles = [c.title for c in api.list_repo_commits(REPO, repo_type="dataset")]
    assert titles == ["Super-squash branch 'main' using huggingface_hub"]  # the client's default message
