// The playground: one slider per objective (weights renormalized as they move), a streamed answer, and
// "compare", which answers the same prompt at several preferences side by side with each answer's scores.
// Plain browser JavaScript over the server's own OpenAI-compatible API; every text from the server is set
// with textContent, never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { models: [], model: null, weights: {} };

function apiHeaders() {
  const headers = { "Content-Type": "application/json" };
  const key = sessionStorage.getItem("paretoalign-key");
  if (key) headers.Authorization = "Bearer " + key;
  return headers;
}

async function api(path, body) {
  const init = body ? { method: "POST", headers: apiHeaders(), body: JSON.stringify(body) } : { headers: apiHeaders() };
  const response = await fetch(path, init);
  if (response.status === 401) {
    $("key-box").style.display = "block";
    throw new Error("this server needs an API key: enter it above");
  }
  if (!response.ok) {
    const data = await response.json().catch(() => ({}));
    throw new Error((data.error && data.error.message) || response.statusText);
  }
  return response;
}

async function loadModels() {
  try {
    const data = await (await api("/v1/models")).json();
    state.models = data.data;
    const select = $("model");
    select.replaceChildren(...state.models.map((model) => new Option(model.id, model.id)));
    selectModel(state.models[0].id);
  } catch (error) {
    $("model-info").textContent = error.message;
  }
}

function selectModel(id) {
  state.model = state.models.find((model) => model.id === id);
  const model = state.model;
  $("model-info").textContent = `${model.id}: method ${model.method}` + (model.base_model ? `, base ${model.base_model}` : "");
  state.weights = {};
  const names = model.objectives.map((objective) => objective.name);
  const defaults = model.default_preference || {};
  names.forEach((name) => { state.weights[name] = defaults[name] ?? 1 / names.length; });
  const box = $("sliders");
  if (!names.length) {
    box.replaceChildren(Object.assign(document.createElement("p"), { className: "hint", textContent: "This model ignores preferences." }));
    return;
  }
  box.replaceChildren(...model.objectives.map(sliderFor));
  showWeights();
}

function sliderFor(objective) {
  const wrap = document.createElement("div");
  wrap.className = "slider";
  const top = document.createElement("div");
  top.className = "top";
  const name = Object.assign(document.createElement("span"), { textContent: objective.name, title: objective.description });
  const weight = Object.assign(document.createElement("span"), { className: "weight" });
  weight.dataset.weightOf = objective.name;
  top.append(name, weight);
  const input = Object.assign(document.createElement("input"), { type: "range", min: 0, max: 1000, step: 1 });
  input.dataset.objective = objective.name;
  input.setAttribute("aria-label", objective.name + " weight");
  input.addEventListener("input", () => setWeight(objective.name, Number(input.value) / 1000));
  const hint = Object.assign(document.createElement("div"), { className: "hint", textContent: objective.description });
  wrap.append(top, input, hint);
  return wrap;
}

// Move one weight and rescale the others so that all still sum to 1 (evenly if the others were all 0).
function setWeight(name, value) {
  const others = Object.keys(state.weights).filter((other) => other !== name);
  if (!others.length) value = 1;
  const rest = 1 - value;
  const total = others.reduce((sum, other) => sum + state.weights[other], 0);
  others.forEach((other) => { state.weights[other] = total > 0 ? state.weights[other] * rest / total : rest / others.length; });
  state.weights[name] = value;
  showWeights();
}

function showWeights() {
  document.querySelectorAll("input[data-objective]").forEach((input) => {
    input.value = Math.round(state.weights[input.dataset.objective] * 1000);
  });
  document.querySelectorAll("[data-weight-of]").forEach((label) => {
    label.textContent = state.weights[label.dataset.weightOf].toFixed(2);
  });
}

function request(preference, stream) {
  const body = {
    model: state.model.id,
    messages: [{ role: "user", content: $("prompt").value }],
    max_tokens: Number($("max-tokens").value) || 64,
    temperature: Number($("temperature").value),
    seed: $("seed").value === "" ? undefined : Number($("seed").value),
    return_scores: true,
    stream,
  };
  if (preference && Object.keys(preference).length) body.preference = preference;
  return body;
}

function showScores(table, scores) {
  table.replaceChildren();
  Object.entries(scores || {}).forEach(([name, value]) => {
    const row = table.insertRow();
    row.insertCell().textContent = name;
    row.insertCell().textContent = Number(value).toFixed(3);
  });
}

function describeApplied(applied) {
  if (!applied || !applied.weights) return applied && applied.source === "ignored" ? "preference ignored by this method" : "";
  const weights = Object.entries(applied.weights).map(([name, w]) => `${name}=${w.toFixed(2)}`).join(", ");
  const steering = applied.steering ? ` · ${JSON.stringify(applied.steering)}` : "";
  return `applied (${applied.source}): ${weights}${steering}`;
}

// POST a streaming chat completion and feed each server-sent event's JSON to onEvent.
async function streamChat(body, onEvent) {
  const response = await api("/v1/chat/completions", body);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event.replace(/^data: /, "");
      if (data === "[DONE]") return;
      onEvent(JSON.parse(data));
    }
  }
}

async function send() {
  const answer = $("answer");
  answer.textContent = "";
  answer.classList.remove("error");
  $("applied").textContent = "";
  showScores($("scores"), {});
  $("send").disabled = true;
  try {
    await streamChat(request(state.weights, true), (event) => {
      if (event.error) throw new Error(event.error.message);
      const choice = event.choices[0];
      if (!choice) return;
      if (choice.delta && choice.delta.content) answer.textContent += choice.delta.content;
      if (choice.finish_reason) {
        $("applied").textContent = `finish: ${choice.finish_reason} · ` + describeApplied(event.preference_applied);
        showScores($("scores"), choice.scores);
      }
    });
  } catch (error) {
    answer.textContent = error.message;
    answer.classList.add("error");
  } finally {
    $("send").disabled = false;
  }
}

// The preferences to compare: five points between two objectives, else each corner, the centre and the sliders.
function comparePoints() {
  const names = Object.keys(state.weights);
  if (names.length === 2) return [1, 0.75, 0.5, 0.25, 0].map((w) => ({ [names[0]]: w, [names[1]]: 1 - w }));
  const corners = names.map((name) => Object.fromEntries(names.map((other) => [other, other === name ? 1 : 0])));
  const centre = Object.fromEntries(names.map((name) => [name, 1 / names.length]));
  return [...corners, centre, { ...state.weights }];
}

async function compare() {
  const grid = $("compare");
  grid.replaceChildren();
  const points = state.model.objectives.length ? comparePoints() : [null];
  $("compare-button").disabled = true;
  await Promise.all(points.map(async (preference) => {
    const card = Object.assign(document.createElement("div"), { className: "card" });
    const title = document.createElement("h3");
    title.textContent = preference ? Object.entries(preference).map(([n, w]) => `${n} ${w.toFixed(2)}`).join(" · ") : "default";
    const text = Object.assign(document.createElement("div"), { className: "text", textContent: "…" });
    const scores = Object.assign(document.createElement("table"), { className: "scores" });
    card.append(title, text, scores);
    grid.append(card);
    try {
      const data = await (await api("/v1/chat/completions", request(preference, false))).json();
      text.textContent = data.choices[0].message.content;
      showScores(scores, data.choices[0].scores);
      card.dataset.done = "true";
    } catch (error) {
      text.textContent = error.message;
      text.classList.add("error");
    }
  }));
  $("compare-button").disabled = false;
}

$("model").addEventListener("change", (event) => selectModel(event.target.value));
$("send").addEventListener("click", send);
$("compare-button").addEventListener("click", compare);
$("use-key").addEventListener("click", () => {
  sessionStorage.setItem("paretoalign-key", $("api-key").value);
  $("key-box").style.display = "none";
  loadModels();
});
loadModels();
