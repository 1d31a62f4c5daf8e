// The drawing pad, and the network's answer after each stroke or upload. Plain JavaScript, no dependencies.
"use strict";

const pad = document.getElementById("pad");
const context = pad.getContext("2d");
const clearButton = document.getElementById("clear");
const upload = document.getElementById("upload");
const result = document.getElementById("result");
const prediction = document.getElementById("prediction");
const verdict = document.getElementById("verdict");
const chart = document.getElementById("probabilities");
const seen = document.getElementById("seen");
const statusLine = document.getElementById("status");
const explainBox = document.getElementById("explain");
const looked = document.getElementById("looked");
const lookedCaption = document.getElementById("looked-caption");

// A thin line scaled down to 28 x 28 is a faint 1-pixel trace, unlike anything MNIST holds. The brush is a tenth of
// the pad (28 pixels on 280): a digit drawn over most of the pad's height is scaled down about ten times, to strokes
// about as wide as MNIST's (about 90% of an average MNIST digit's ink, for the ten digits of the browser test).
const BRUSH = pad.width * 0.1;
const PAPER = "#ffffff";
const INK = "#000000";

let drawing = null; // the pointer drawing now, and where it was last
let latest = 0; // the number of the latest request: answers to older ones are dropped

const bars = [];
for (let digit = 0; digit < 10; digit += 1) {
  const item = document.createElement("li");
  item.dataset.digit = String(digit);
  const value = document.createElement("span");
  value.className = "value";
  const bar = document.createElement("span");
  bar.className = "bar";
  const label = document.createElement("span");
  label.className = "label";
  label.textContent = String(digit);
  item.append(value, bar, label);
  chart.append(item);
  bars.push({ item, bar, value });
}

function blankPad() {
  context.fillStyle = PAPER;
  context.fillRect(0, 0, pad.width, pad.height);
  context.lineCap = "round";
  context.lineJoin = "round";
  context.lineWidth = BRUSH;
  context.strokeStyle = INK;
  context.fillStyle = INK;
}

function showAnswer(answer) {
  // Above the network's OOD threshold, "not a digit"; else, under its "not sure" threshold, the two most likely
  // digits instead of a confident answer.
  if (answer.not_digit) {
    prediction.textContent = "not a digit";
  } else {
    prediction.textContent = answer.unsure ? `not sure: ${answer.digit} or ${answer.runner_up}?` : String(answer.digit);
  }
  prediction.classList.toggle("not-digit", Boolean(answer.not_digit));
  prediction.classList.toggle("unsure", !answer.not_digit && Boolean(answer.unsure));
  verdict.hidden = !answer.not_digit;
  verdict.textContent = answer.not_digit
    ? `This does not look like a digit to the network (its ${answer.ood_method} score, ` +
      `${answer.ood_score.toPrecision(3)}, is above ${answer.ood_threshold.toPrecision(3)}). ` +
      `Its best guess would be ${answer.digit}.`
    : "";
  answer.probabilities.forEach((p, digit) => {
    const { item, bar, value } = bars[digit];
    item.dataset.p = p.toFixed(4);
    item.classList.toggle("top", digit === answer.digit);
    item.setAttribute("aria-label", `${digit}: ${(100 * p).toFixed(1)}%`);
    bar.style.height = `${Math.max(0, Math.min(1, p)) * 100}%`;
    value.textContent = p >= 0.005 ? `${Math.round(100 * p)}%` : "";
  });
  seen.src = answer.image;
  seen.hidden = false;
  if (answer.explanation) {
    looked.src = answer.explanation;
    looked.hidden = false;
    lookedCaption.hidden = false;
  } else {
    looked.hidden = true;
    lookedCaption.hidden = true;
    looked.removeAttribute("src");
  }
  statusLine.textContent = "";
  statusLine.classList.remove("error");
}

function resetAnswer(message = "") {
  prediction.textContent = "";
  for (const { item, bar, value } of bars) {
    delete item.dataset.p;
    item.classList.remove("top");
    item.removeAttribute("aria-label");
    bar.style.height = "0";
    value.textContent = "";
  }
  seen.hidden = true;
  seen.removeAttribute("src");
  looked.hidden = true;
  lookedCaption.hidden = true;
  looked.removeAttribute("src");
  prediction.classList.remove("unsure", "not-digit");
  verdict.hidden = true;
  verdict.textContent = "";
  statusLine.textContent = message;
  statusLine.classList.toggle("error", message !== "");
}

async function ask(body, headers = {}) {
  lastBody = { body, headers };
  latest += 1;
  const mine = latest;
  result.setAttribute("aria-busy", "true");
  let answer;
  try {
    const url = explainBox.checked ? "/api/predict?explain=ig" : "/api/predict";
    const response = await fetch(url, { method: "POST", body, headers });
    answer = await response.json();
    if (!response.ok) {
      answer = { error: answer.detail || `the server answered ${response.status}` };
    }
  } catch (error) {
    answer = { error: `no answer from the server (${error.message})` };
  }
  if (mine !== latest) {
    return; // a newer stroke, upload or Clear came after this request
  }
  if (answer.error) {
    resetAnswer(answer.error);
  } else {
    showAnswer(answer);
  }
  result.setAttribute("aria-busy", "false");
}

function askAboutPad() {
  pad.toBlob((blob) => {
    if (blob) {
      ask(blob, { "Content-Type": "image/png" });
    }
  }, "image/png");
}

function pointOf(event) {
  const box = pad.getBoundingClientRect();
  return {
    x: ((event.clientX - box.left) * pad.width) / box.width,
    y: ((event.clientY - box.top) * pad.height) / box.height,
  };
}

pad.addEventListener("pointerdown", (event) => {
  if (event.pointerType === "mouse" && event.button !== 0) {
    return;
  }
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  const point = pointOf(event);
  drawing = { id: event.pointerId, last: point };
  context.beginPath();
  context.arc(point.x, point.y, BRUSH / 2, 0, 2 * Math.PI);
  context.fill();
});

pad.addEventListener("pointermove", (event) => {
  if (!drawing || event.pointerId !== drawing.id) {
    return;
  }
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  context.beginPath();
  context.moveTo(drawing.last.x, drawing.last.y);
  for (const step of events.length ? events : [event]) {
    drawing.last = pointOf(step);
    context.lineTo(drawing.last.x, drawing.last.y);
  }
  context.stroke();
});

function endStroke(event) {
  if (!drawing || event.pointerId !== drawing.id) {
    return;
  }
  drawing = null;
  askAboutPad();
}

pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

clearButton.addEventListener("click", () => {
  latest += 1; // answers still on their way are for a drawing that is gone
  blankPad();
  resetAnswer();
  lastBody = null;
  result.setAttribute("aria-busy", "false");
  upload.value = "";
});

upload.addEventListener("change", async () => {
  const file = upload.files[0];
  if (!file) {
    return;
  }
  blankPad();
  try {
    const picture = await createImageBitmap(file);
    const scale = Math.min(pad.width / picture.width, pad.height / picture.height);
    const width = picture.width * scale;
    const height = picture.height * scale;
    context.drawImage(picture, (pad.width - width) / 2, (pad.height - height) / 2, width, height);
  } catch {
    // The browser cannot show it; the server still says what it makes of it.
  }
  const form = new FormData();
  form.append("file", file);
  ask(form);
});

let lastBody = null; // the latest drawing or upload, asked again when the switch changes
explainBox.addEventListener("change", () => {
  if (lastBody) {
    ask(lastBody.body, lastBody.headers);
  }
});

async function showNetwork() {
  const footer = document.getElementById("network");
  try {
    const health = await (await fetch("/api/health")).json();
    const sure = health.unsure_threshold ? ` Not sure under p = ${health.unsure_threshold.toFixed(3)}.` : "";
    const digit = health.ood_threshold !== null && health.ood_threshold !== undefined
      ? ` Not a digit above ${health.ood_method} score ${health.ood_threshold.toPrecision(3)}.`
      : "";
    footer.textContent = `Network: ${health.network}, from ${health.checkpoint}.${sure}${digit}`;
    if (!health.explain || health.explain.length === 0) {
      explainBox.disabled = true;
      explainBox.parentElement.title = "This server runs an ONNX export, which has no gradients to explain.";
    }
  } catch {
    footer.textContent = "The server does not answer.";
  }
}

blankPad();
showNetwork();
