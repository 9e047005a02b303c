"""The rating page and its JSON API over an `EpisodeStore` (served by `experiments/rate.py`).

    GET  /            the page: two episodes of one task side by side, judged by a rater
    GET  /api/pair    ?rater=R -> {"first": episode, "second": episode}, or {"done": true}
    POST /api/judge   {"rater", "first", "second", "choice", "flags": [{"episode", "kind",
                      "reason"}, ...]} -> 201 {"id": judgement id}; 400 bad input, 404 unknown
                      episode, 409 a pair the rater has judged already
    GET  /api/stats   {"episodes", "judgements", "flags", "by_rater": {rater: judgements}}

Every error is JSON {"error": message}, the message naming the field and what is allowed, and a
rejected judgement writes nothing. Episodes go to the page without their reward, reward
components and env info: a rater who saw them would judge the numbers, not the behaviour.
"""

from __future__ import annotations

import collections
from typing import Any

import flask
from werkzeug.exceptions import HTTPException

from rlx.feedback.store import (
    CHOICES,
    FLAG_KINDS,
    AlreadyJudged,
    EpisodeRecord,
    EpisodeStore,
    FeedbackError,
    UnknownEpisode,
)

MAX_BODY = 64 * 1024
HIDDEN = ("reward", "components", "info")      # never sent to the page (they'd bias the rater)
_JUDGE_KEYS = {"rater": str, "first": int, "second": int, "choice": str, "flags": list}
_REQUIRED = ("rater", "first", "second", "choice")
_FLAG_KEYS = {"episode": int, "kind": str, "reason": str}
_TYPE_NAMES = {str: "a string", int: "an integer", list: "a list"}
_MAX_ID = 2**63 - 1                             # SQLite's INTEGER


def make_app(store: EpisodeStore) -> flask.Flask:
    """The rating app over `store`; serve it with `app.run(host, port, threaded=True)`."""
    app = flask.Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.json.sort_keys = False

    @app.get("/")
    def page():
        return flask.Response(PAGE, mimetype="text/html", headers={
            # Nothing is fetched from anywhere but this server.
            "Content-Security-Policy": "default-src 'none'; connect-src 'self'; "
                                       "script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                                       "img-src data:",
            "X-Content-Type-Options": "nosniff"})

    @app.get("/api/pair")
    def pair():
        episodes = store.next_pair(flask.request.args.get("rater"))
        if episodes is None:
            return {"done": True}
        return {"first": episode_json(episodes[0]), "second": episode_json(episodes[1])}

    @app.post("/api/judge")
    def judge():
        fields, flags = parse_judgement(flask.request.get_json(force=True, silent=True))
        judgement_id = store.judge(fields["first"], fields["second"], fields["choice"],
                                   rater=fields["rater"], flags=flags)
        return {"id": judgement_id}, 201

    @app.get("/api/stats")
    def stats():
        by_rater = collections.Counter(j.rater for j in store.judgements())
        return {**store.count(), "by_rater": dict(sorted(by_rater.items()))}

    @app.errorhandler(FeedbackError)
    def bad_input(error: FeedbackError):
        return {"error": str(error)}, error_status(error)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        if error.code == 413:
            return {"error": f"the body is over the limit of {MAX_BODY} bytes"}, 413
        return {"error": f"{error.name}: {error.description}"}, error.code

    return app


def episode_json(record: EpisodeRecord) -> dict[str, Any]:
    """What the page gets of an episode: everything but the tokens and the `HIDDEN` numbers."""
    return {k: v for k, v in record.to_json().items() if k not in HIDDEN}


def error_status(error: FeedbackError) -> int:
    """404 for an episode not in the store, 409 for a pair judged already, else 400."""
    if isinstance(error, UnknownEpisode):
        return 404
    if isinstance(error, AlreadyJudged):
        return 409
    return 400


def parse_judgement(body: Any) -> tuple[dict[str, Any], dict[int, tuple[str, str]]]:
    """The fields of a /api/judge body and its flags {episode: (kind, reason)}; raises
    `FeedbackError` naming the first bad field (the store checks the values further)."""
    if not isinstance(body, dict):
        raise FeedbackError(f"the body must be a JSON object with keys {', '.join(_JUDGE_KEYS)} "
                            f"(flags optional)")
    _check_keys("body", body, _JUDGE_KEYS, _REQUIRED)
    for key, value in body.items():
        _check_type(key, value, _JUDGE_KEYS[key])
    for key in ("first", "second"):
        _check_id(key, body[key])
    if body["choice"] not in CHOICES:
        raise FeedbackError(f"choice={body['choice']!r}; allowed: {', '.join(CHOICES)}")
    flags: dict[int, tuple[str, str]] = {}
    for i, flag in enumerate(body.get("flags", [])):
        where = f"flags[{i}]"
        if not isinstance(flag, dict):
            raise FeedbackError(f"{where} must be an object with keys {', '.join(_FLAG_KEYS)}")
        _check_keys(where, flag, _FLAG_KEYS, tuple(_FLAG_KEYS))
        for key, value in flag.items():
            _check_type(f"{where}.{key}", value, _FLAG_KEYS[key])
        _check_id(f"{where}.episode", flag["episode"])
        if flag["kind"] not in FLAG_KINDS:
            raise FeedbackError(f"{where}.kind={flag['kind']!r}; allowed: {', '.join(FLAG_KINDS)}")
        if flag["episode"] in flags:
            raise FeedbackError(f"{where}.episode={flag['episode']}: an episode is flagged at "
                                f"most once per judgement")
        flags[flag["episode"]] = (flag["kind"], flag["reason"])
    return body, flags


def _check_keys(where: str, obj: dict, allowed, required: tuple[str, ...]) -> None:
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        raise FeedbackError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
                            f"allowed: {', '.join(allowed)}")
    missing = [k for k in required if k not in obj]
    if missing:
        raise FeedbackError(f"{where}: missing key(s) {', '.join(map(repr, missing))}; "
                            f"required: {', '.join(required)}")


def _check_type(field: str, value: Any, kind: type) -> None:
    if isinstance(value, bool) or not isinstance(value, kind):
        raise FeedbackError(f"{field}={value!r} must be {_TYPE_NAMES[kind]}")


def _check_id(field: str, value: int) -> None:
    if not 1 <= value <= _MAX_ID:
        raise FeedbackError(f"{field}={value} must be an episode id (1 to {_MAX_ID})")


PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>rlx: rate episodes</title>
<style>
  :root { --line: #d0d4da; --muted: #5b6470; --accent: #1f5fbf; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
         color: #1b1f24; background: #f4f5f7; min-height: 100vh; display: flex;
         flex-direction: column; }
  header { display: flex; flex-wrap: wrap; gap: 12px 24px; align-items: center;
           padding: 10px 20px; background: #fff; border-bottom: 1px solid var(--line); }
  header h1 { font-size: 17px; margin: 0; }
  header label { color: var(--muted); }
  #rater { width: 12em; }
  #count { margin-left: auto; color: var(--muted); }
  input, select, button { font: inherit; }
  input, select { padding: 3px 6px; border: 1px solid var(--line); border-radius: 4px; }
  button { padding: 5px 12px; border: 1px solid var(--line); border-radius: 5px;
           background: #fff; cursor: pointer; }
  button:disabled { opacity: .5; cursor: default; }
  kbd { font: 12px ui-monospace, monospace; padding: 0 4px; border: 1px solid var(--line);
        border-radius: 3px; background: #f4f5f7; color: var(--muted); }
  #message { margin: 12px 20px 0; padding: 8px 12px; border-radius: 5px; }
  #message:empty { display: none; }
  #message.info { background: #e8f0fb; }
  #message.error { background: #fde8e8; color: #8a1010; font-weight: 600; }
  #message.done { background: #e6f4e9; font-weight: 600; }
  #task { margin: 12px 20px 0; color: var(--muted); }
  #pair { flex: 1; display: grid; grid-template-columns: 1fr 1fr; gap: 16px; padding: 12px 20px;
          align-items: start; }
  .episode { background: #fff; border: 1px solid var(--line); border-radius: 6px;
             padding: 12px 14px; min-width: 0; }
  .episode h2 { font-size: 16px; margin: 0 0 8px; }
  .episode h2 .meta { font-weight: normal; color: var(--muted); font-size: 14px; }
  details.prompt { margin-bottom: 10px; }
  details.prompt summary { cursor: pointer; color: var(--muted); }
  .round { border-top: 1px solid var(--line); padding-top: 6px; margin-top: 8px; }
  .round-title { font-size: 12px; font-weight: 600; text-transform: uppercase; letter-spacing: .04em;
                 color: var(--muted); }
  .block { margin: 6px 0; padding: 6px 9px; border-radius: 4px; border-left: 4px solid; }
  .block .label { font-size: 12px; font-weight: 600; color: var(--muted); }
  .block pre { margin: 2px 0 0; white-space: pre-wrap; overflow-wrap: anywhere;
               font: 13px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
  .think { background: #f3f3f5; border-color: #a7abb3; }
  .think pre { font-style: italic; color: #444b55; font-family: inherit; font-size: 14px; }
  .tool_call { background: #eaf1fc; border-color: #1f5fbf; }
  .env { background: #eaf6ec; border-color: #2e8b46; }
  .answer { background: #fff6db; border-color: #d29b00; }
  .answer pre { font-weight: 600; font-size: 14px; }
  .text, .system, .user, .raw { background: #fafafa; border-color: #d0d4da; }
  .final { margin-top: 10px; }
  .none { color: var(--muted); font-style: italic; }
  #actions { position: sticky; bottom: 0; display: grid; grid-template-columns: 1fr auto 1fr;
             gap: 16px; align-items: center; padding: 10px 20px; background: #fff;
             border-top: 1px solid var(--line); box-shadow: 0 -2px 6px rgba(0,0,0,.06); }
  .flag { display: flex; gap: 6px; align-items: center; flex-wrap: wrap; }
  .flag input { flex: 1; min-width: 10em; }
  #flag-right { justify-content: flex-end; }
  #choices { display: flex; gap: 8px; align-items: center; }
  #choices button[aria-pressed="true"] { background: var(--accent); border-color: var(--accent);
                                         color: #fff; }
  #choices button[aria-pressed="true"] kbd { background: transparent; color: #fff; }
  #submit { background: #1b1f24; color: #fff; border-color: #1b1f24; margin-left: 8px; }
  [hidden] { display: none !important; }
</style>
</head>
<body>
<header>
  <h1>Which episode is better?</h1>
  <label>Rater <input id="rater" autocomplete="off" spellcheck="false"
                      placeholder="your id, e.g. ana"></label>
  <button id="start">Start</button>
  <label><input type="checkbox" id="raw"> raw text</label>
  <span id="count"></span>
</header>
<div id="message" role="status"></div>
<div id="task" hidden></div>
<main id="pair" hidden>
  <section class="episode" id="episode-left" data-side="left"></section>
  <section class="episode" id="episode-right" data-side="right"></section>
</main>
<div id="actions" hidden>
  <div class="flag" id="flag-left">
    <select id="flag-left-kind" aria-label="flag the left episode">
      <option value="">no flag (left)</option><option value="unsafe">unsafe</option>
      <option value="hacking">reward hacking</option>
    </select>
    <input id="flag-left-reason" maxlength="500" placeholder="reason (if flagged)"
           disabled>
  </div>
  <div id="choices">
    <button id="left" aria-pressed="false">Left is better <kbd>1</kbd> <kbd>&larr;</kbd></button>
    <button id="tie" aria-pressed="false">Tie <kbd>0</kbd> <kbd>t</kbd> <kbd>&darr;</kbd></button>
    <button id="right" aria-pressed="false">Right is better <kbd>2</kbd> <kbd>&rarr;</kbd></button>
    <button id="submit">Submit <kbd>Enter</kbd></button>
  </div>
  <div class="flag" id="flag-right">
    <input id="flag-right-reason" maxlength="500" placeholder="reason (if flagged)"
           disabled>
    <select id="flag-right-kind" aria-label="flag the right episode">
      <option value="">no flag (right)</option><option value="unsafe">unsafe</option>
      <option value="hacking">reward hacking</option>
    </select>
  </div>
</div>
<script>
"use strict";
// Episode text is only ever set with textContent: the page never parses it as HTML.
const $ = (id) => document.getElementById(id);
const KEYS = { "1": "left", ArrowLeft: "left", "0": "tie", t: "tie", T: "tie", ArrowDown: "tie",
               "2": "right", ArrowRight: "right" };
const CHAT_MARKERS = /<\|im_start\|>(?:system|user|assistant|tool)?\n?|<\|im_end\|>\n?|<\|endoftext\|>/g;
const SEGMENT = /<(think|tool_call|answer)>([\s\S]*?)(?:<\/\1>|$)/g;
const LABELS = { think: "thinking", tool_call: "tool call", answer: "answer", text: "text",
                 env: "tool's answer" };
let current = null;     // {left: episode, right: episode, choice: null | "left" | "tie" | "right"}
let busy = false;

function el(tag, className, text, children) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  for (const child of children || []) node.appendChild(child);
  return node;
}

function clean(text) {
  return text.replace(CHAT_MARKERS, "").replace(/<\/?tool_response>/g, "").trim();
}

function block(kind, text) {
  return el("div", "block " + kind, null, [el("div", "label", LABELS[kind] || kind),
                                           el("pre", null, text)]);
}

function segments(text) {    // [{kind, text}]: thinking, tool calls, answers and plain text
  const out = [];
  let last = 0;
  const plain = (s) => { const c = clean(s); if (c) out.push({ kind: "text", text: c }); };
  for (const m of text.matchAll(SEGMENT)) {
    plain(text.slice(last, m.index));
    out.push({ kind: m[1], text: clean(m[2]) });
    last = m.index + m[0].length;
  }
  plain(text.slice(last));
  return out;
}

function promptView(prompt) {
  const details = el("details", "prompt");
  const messages = prompt.split("<|im_start|>").filter((m) => m.trim());
  let question = "";
  const parts = messages.map((m) => {
    const newline = m.indexOf("\n");
    const role = messages.length > 1 && newline > 0 ? m.slice(0, newline).trim() : "prompt";
    const text = clean(messages.length > 1 && newline > 0 ? m.slice(newline + 1) : m);
    if (role === "user") question = text;
    if (!text) return null;     // the empty assistant turn the prompt ends with
    return el("div", "block " + role, null, [el("div", "label", role), el("pre", null, text)]);
  }).filter((p) => p);
  const summary = question ? "Prompt: " + question.replace(/\s+/g, " ").slice(0, 160)
                           : "Prompt";
  details.appendChild(el("summary", null, summary));
  parts.forEach((p) => details.appendChild(p));
  return details;
}

function render(side, episode) {
  const root = $("episode-" + side);
  root.replaceChildren();
  root.dataset.episode = episode.id;
  const title = el("h2", null, side === "left" ? "Left " : "Right ");
  title.appendChild(el("span", "meta",
    "run " + episode.run + " \u00b7 step " + episode.step + " \u00b7 episode #" + episode.id));
  root.append(title, promptView(episode.prompt));
  const raw = $("raw").checked;
  let final = null;
  episode.rounds.forEach((round, i) => {
    const box = el("div", "round", null, [el("div", "round-title", "Round " + (i + 1))]);
    if (raw) {
      box.appendChild(block("raw", round.policy));
      if (round.env) box.appendChild(block("raw", round.env));
    } else {
      for (const s of segments(round.policy)) {
        box.appendChild(block(s.kind, s.text));
        if (s.kind === "answer") final = s.text;
      }
      const env = clean(round.env || "");
      if (env) box.appendChild(block("env", env));
    }
    root.appendChild(box);
  });
  if (!raw) {
    const last = el("div", "final", null, [el("strong", null, "Final answer: ")]);
    last.appendChild(final === null ? el("span", "none", "none given")
                                    : el("span", "final-answer", final));
    root.appendChild(last);
  }
}

function say(kind, text) {
  const box = $("message");
  box.className = kind;
  box.textContent = text;
}

function rater() { return $("rater").value.trim(); }

async function api(path, options) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    throw new Error("the rating server cannot be reached (" + err.message + ")");
  }
  let body = null;
  try { body = await response.json(); } catch (err) { /* not JSON: reported below */ }
  if (!response.ok) {
    const why = body && body.error ? body.error : response.statusText;
    const error = new Error("server said " + response.status + ": " + why);
    error.status = response.status;
    throw error;
  }
  return body;
}

async function updateCount() {
  try {
    const stats = await api("/api/stats");
    const mine = stats.by_rater[rater()] || 0;
    $("count").textContent = "judged by you: " + mine + " \u00b7 by everyone: " + stats.judgements;
    $("count").dataset.mine = mine;
  } catch (err) { say("error", err.message); }
}

function showPair(visible) {
  for (const id of ["pair", "actions", "task"]) $(id).hidden = !visible;
}

function resetControls() {
  current.choice = null;
  for (const id of ["left", "tie", "right"]) $(id).setAttribute("aria-pressed", "false");
  for (const side of ["left", "right"]) {
    $("flag-" + side + "-kind").value = "";
    $("flag-" + side + "-reason").value = "";
    $("flag-" + side + "-reason").disabled = true;
  }
}

async function loadPair() {
  if (!rater()) { say("error", "Type your rater id first."); $("rater").focus(); return; }
  localStorage.setItem("rlx.rater", rater());
  let data;
  try {
    data = await api("/api/pair?rater=" + encodeURIComponent(rater()));
  } catch (err) { showPair(false); current = null; say("error", err.message); return; }
  updateCount();
  if (data.done) {
    showPair(false);
    current = null;
    say("done", "No pair left for rater " + rater() + ": every pair has been judged. Thank you!");
    return;
  }
  // Which episode goes left is random: a rater's habit of favouring one side averages out.
  const swap = Math.random() < 0.5;
  current = { left: swap ? data.second : data.first, right: swap ? data.first : data.second };
  $("task").textContent = "Task " + current.left.task;
  render("left", current.left);
  render("right", current.right);
  resetControls();
  showPair(true);
  if (document.activeElement === $("rater")) $("rater").blur();   // the shortcuts work at once
  window.scrollTo(0, 0);
}

function choose(choice) {
  if (!current) return;
  current.choice = choice;
  for (const id of ["left", "tie", "right"]) {
    $(id).setAttribute("aria-pressed", String(id === choice));
  }
  say("info", "Chosen: " + $(choice).firstChild.textContent.trim() +
              ". Add a flag if needed, then Submit (Enter).");
}

function flags() {
  const out = [];
  for (const side of ["left", "right"]) {
    const kind = $("flag-" + side + "-kind").value;
    const reason = $("flag-" + side + "-reason").value.trim();
    if (!kind) continue;
    if (!reason) {
      $("flag-" + side + "-reason").focus();
      throw new Error("Say briefly why the " + side + " episode is flagged (a reason is required).");
    }
    out.push({ episode: current[side].id, kind: kind, reason: reason });
  }
  return out;
}

async function submit() {
  if (!current || busy) return;
  if (!current.choice) { say("error", "Pick Left, Tie or Right first (keys 1, 0, 2)."); return; }
  let body;
  try {
    body = { rater: rater(), first: current.left.id, second: current.right.id,
             choice: { left: "first", tie: "tie", right: "second" }[current.choice],
             flags: flags() };
  } catch (err) { say("error", err.message); return; }
  busy = true;
  $("submit").disabled = true;
  try {
    const saved = await api("/api/judge", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    say("info", "Saved judgement #" + saved.id + ".");
    await loadPair();
  } catch (err) {
    say("error", err.message);
    if (err.status === 409) await loadPair();    // judged already (another tab): move on
  } finally {
    busy = false;
    $("submit").disabled = false;
  }
}

for (const side of ["left", "right"]) {
  $("flag-" + side + "-kind").addEventListener("change", (e) => {
    const reason = $("flag-" + side + "-reason");
    reason.disabled = !e.target.value;
    if (e.target.value) reason.focus(); else reason.value = "";
  });
}
for (const id of ["left", "tie", "right"]) $(id).addEventListener("click", () => choose(id));
$("submit").addEventListener("click", submit);
$("start").addEventListener("click", loadPair);
$("rater").addEventListener("keydown", (e) => { if (e.key === "Enter") loadPair(); });
$("raw").addEventListener("change", () => {
  if (current) { render("left", current.left); render("right", current.right); }
});
document.addEventListener("keydown", (e) => {
  if (!current || e.ctrlKey || e.metaKey || e.altKey) return;
  const target = e.target;
  const typing = target.matches("input:not([type=checkbox]), select, textarea");
  if (!typing && KEYS[e.key]) { e.preventDefault(); choose(KEYS[e.key]); return; }
  // Enter submits from anywhere but the rater field, the Start button and the flag menus
  // (a choice button keeps the focus after a click: Enter there submits, not clicks again).
  if (e.key === "Enter" && !["rater", "start"].includes(target.id) && target.tagName !== "SELECT") {
    e.preventDefault();
    submit();
  }
});

$("rater").value = localStorage.getItem("rlx.rater") || "";
if (rater()) loadPair(); else $("rater").focus();
</script>
</body>
</html>
"""
