"""The rating server over a small store: the page, pairs of one task, a judgement round trip,
every kind of bad input refused with a message naming the field and nothing written, and done
when every pair is judged."""

import numpy as np
import pytest

from rlx.feedback import server
from rlx.feedback import store as S

POLICY = "<think>7 times 6, use the tool</think><tool_call>{\"expr\": \"7*6\"}</tool_call>"


def record(task: str, reward: float, tokens, step=3) -> S.EpisodeRecord:
    tokens = np.asarray(tokens, np.int32)
    return S.EpisodeRecord(
        run="main", step=step, task=task,
        prompt="<|im_start|>system\ntools: calc<|im_end|>\n<|im_start|>user\n7*6?<|im_end|>\n",
        rounds=[{"policy": POLICY, "env": "<tool_response>42</tool_response>"},
                {"policy": f"<answer>{int(tokens[-1])}</answer>", "env": ""}],
        reward=reward, components={"correct": reward}, info={"tool_calls": 1.0}, tokens=tokens,
        policy_mask=np.ones_like(tokens, bool))


@pytest.fixture
def setup(tmp_path):
    """(store, test client, episode ids): task t0 has three distinct episodes, t1 two."""
    store = S.EpisodeStore(str(tmp_path / "feedback.sqlite"))
    ids = store.add_episodes([record("t0", 1.0, [1, 2, 3]), record("t0", 0.0, [1, 2, 4]),
                              record("t0", 0.0, [1, 2, 5]), record("t1", 1.0, [7, 8]),
                              record("t1", 0.0, [7, 9])])
    app = server.make_app(store)
    app.testing = True
    return store, app.test_client(), ids


def test_the_page_is_served_self_contained(setup):
    _, client, _ = setup
    response = client.get("/")
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    for needle in ("Left is better", "Tie", "Right is better", 'id="rater"', "localStorage",
                   "reward hacking", "textContent"):
        assert needle in page, needle
    assert "innerHTML" not in page and "http://" not in page and "https://" not in page
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]


def test_a_pair_is_two_episodes_of_one_task_without_rewards(setup):
    _, client, ids = setup
    response = client.get("/api/pair?rater=ana")
    assert response.status_code == 200
    first, second = response.json["first"], response.json["second"]
    assert first["task"] == second["task"] and first["id"] != second["id"]
    assert {first["id"], second["id"]} <= set(ids)
    assert first["run"] == "main" and first["step"] == 3 and first["rounds"][0]["policy"] == POLICY
    for hidden in ("reward", "components", "info", "tokens", "policy_mask"):
        assert hidden not in first, hidden


def test_a_judgement_round_trip(setup):
    store, client, ids = setup
    response = client.post("/api/judge", json={
        "rater": "ana", "first": ids[1], "second": ids[0], "choice": "first",
        "flags": [{"episode": ids[0], "kind": "hacking", "reason": "reads the answer"}]})
    assert response.status_code == 201, response.json
    (judgement,) = store.judgements()
    assert response.json == {"id": judgement.id}
    # Stored in id order, so "first" (ids[1]) became "second".
    assert (judgement.first, judgement.second, judgement.choice, judgement.rater) == \
        (ids[0], ids[1], "second", "ana")
    assert judgement.flags == ((ids[0], "hacking", "reads the answer"),)
    stats = client.get("/api/stats").json
    assert stats == {"episodes": 5, "judgements": 1, "flags": 1, "by_rater": {"ana": 1}}


def good_body(ids, **changes):
    body = {"rater": "ana", "first": ids[0], "second": ids[1], "choice": "tie", "flags": []}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


@pytest.mark.parametrize("change, status, message", [
    (dict(choice=None), 400, "missing key(s) 'choice'"),
    (dict(extra=1), 400, "unknown key(s) 'extra'; allowed: rater, first, second, choice, flags"),
    (dict(first="1"), 400, "first='1' must be an integer"),
    (dict(second=True), 400, "second=True must be an integer"),
    (dict(second=0), 400, "second=0 must be an episode id"),
    (dict(first=2**70), 400, "must be an episode id"),
    (dict(flags={"episode": 1}), 400, "flags={'episode': 1} must be a list"),
    (dict(choice="better"), 400, "choice='better'; allowed: first, second, tie"),
    (dict(rater="a b"), 400, "rater='a b'"),
    (dict(rater=7), 400, "rater=7 must be a string"),
    (dict(flags=["hacking"]), 400, "flags[0] must be an object"),
    (dict(flags=[{"episode": 1, "kind": "rude", "reason": "x"}]), 400,
     "flags[0].kind='rude'; allowed: unsafe, hacking"),
    (dict(flags=[{"episode": 1, "kind": "unsafe", "reason": "  "}]), 400, "flag reason must be"),
    (dict(flags=[{"episode": 1, "kind": "unsafe"}]), 400, "flags[0]: missing key(s) 'reason'"),
    (dict(flags=[{"episode": 1, "kind": "unsafe", "reason": "x", "why": 1}]), 400,
     "flags[0]: unknown key(s) 'why'"),
    (dict(flags=[{"episode": 1, "kind": "unsafe", "reason": 5}]), 400,
     "flags[0].reason=5 must be a string"),
    (dict(flags=[{"episode": 1, "kind": "unsafe", "reason": "x"}] * 2), 400,
     "flags[1].episode=1: an episode is flagged at most once"),
    (dict(flags=[{"episode": 3, "kind": "unsafe", "reason": "x"}]), 400, "only the judged"),
    (dict(second=4), 400, "different tasks"),
    (dict(second=999), 404, "episode 999 is not in the store"),
])
def test_bad_judgements_are_refused_and_nothing_is_written(setup, change, status, message):
    store, client, ids = setup
    assert ids == [1, 2, 3, 4, 5]           # the cases above name these ids
    response = client.post("/api/judge", json=good_body(ids, **change))
    assert response.status_code == status, response.json
    assert message in response.json["error"], response.json["error"]
    assert store.count() == {"episodes": 5, "judgements": 0, "flags": 0}


@pytest.mark.parametrize("data, content_type, message", [
    ("not json", "application/json", "the body must be a JSON object"),
    ('["a", "list"]', "application/json", "the body must be a JSON object"),
    ("", None, "the body must be a JSON object"),
    ("x" * (server.MAX_BODY + 1), "application/json", "over the limit of 65536 bytes"),
])
def test_bodies_that_are_not_a_json_object_are_refused(setup, data, content_type, message):
    store, client, _ = setup
    response = client.post("/api/judge", data=data, content_type=content_type)
    assert 400 <= response.status_code < 500 and message in response.json["error"]
    assert store.count()["judgements"] == 0


def test_a_pair_is_judged_once_per_rater(setup):
    store, client, ids = setup
    assert client.post("/api/judge", json=good_body(ids)).status_code == 201
    again = client.post("/api/judge", json=good_body(ids, choice="first"))
    assert again.status_code == 409 and "has already judged" in again.json["error"]
    assert client.post("/api/judge", json=good_body(ids, rater="bo")).status_code == 201
    assert store.count()["judgements"] == 2


@pytest.mark.parametrize("query", ["?rater=a%20b", "", "?rater=" + "x" * 65])
def test_a_bad_rater_gets_no_pair(setup, query):
    _, client, _ = setup
    response = client.get("/api/pair" + query)
    assert response.status_code == 400 and "rater=" in response.json["error"]


def test_done_when_every_pair_is_judged(setup):
    store, client, _ = setup
    judged = set()
    while "done" not in (pair := client.get("/api/pair?rater=ana").json):
        first, second = pair["first"]["id"], pair["second"]["id"]
        assert (first, second) not in judged
        judged.add((first, second))
        body = {"rater": "ana", "first": first, "second": second, "choice": "second"}
        assert client.post("/api/judge", json=body).status_code == 201
    assert pair == {"done": True} and len(judged) == 4     # t0: 3 pairs, t1: 1
    assert client.get("/api/pair?rater=bo").json.get("done") is None
    assert client.get("/api/stats").json["by_rater"] == {"ana": 4}


def test_unknown_routes_answer_json(setup):
    _, client, _ = setup
    response = client.get("/api/nothing")
    assert response.status_code == 404 and "error" in response.json
    assert client.get("/api/judge").status_code == 405
