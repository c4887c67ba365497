#!/usr/bin/env node
// MINOOTS "schedule-timer" GitHub Action: plain Node 20 (global fetch), no dependencies, so the
// runner needs no install step. Inputs come from INPUT_* variables, outputs go to $GITHUB_OUTPUT.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');

const REGION_LABEL_KEY = 'minoots.io/region';
const TERMINAL = new Set(['settled', 'failed', 'cancelled']);
const RETRY_STATUSES = new Set([429, 503]);
const MAX_BACKOFF_MS = 30000;

class StepFailure extends Error {}

function inputEnvNames(name) {
  // GitHub's runner: INPUT_ + the name with spaces as '_', upper-cased, hyphens kept
  // (INPUT_API-KEY); the underscore form is accepted too, for shells that cannot set those.
  const github = `INPUT_${name.replace(/ /g, '_').toUpperCase()}`;
  const underscored = `INPUT_${name.replace(/[^a-zA-Z0-9]+/g, '_').toUpperCase()}`;
  return github === underscored ? [github] : [github, underscored];
}

function getInput(name, { required = false } = {}) {
  for (const envName of inputEnvNames(name)) {
    const value = process.env[envName];
    if (value !== undefined && value.trim().length > 0) {
      return value.trim();
    }
  }
  if (required) {
    throw new StepFailure(`Missing required input '${name}'`);
  }
  return undefined;
}

function numberInput(name, fallback, { min = 0 } = {}) {
  const raw = getInput(name);
  if (raw === undefined) {
    return fallback;
  }
  const value = Number(raw);
  if (!Number.isFinite(value) || value < min) {
    throw new StepFailure(`Input '${name}' must be a number of at least ${min}, not '${raw}'`);
  }
  return value;
}

function booleanInput(name) {
  const raw = (getInput(name) || 'false').toLowerCase();
  if (!['true', 'false', 'yes', 'no', '1', '0'].includes(raw)) {
    throw new StepFailure(`Input '${name}' must be true or false, not '${raw}'`);
  }
  return ['true', 'yes', '1'].includes(raw);
}

function jsonInput(name, { object = false } = {}) {
  const raw = getInput(name);
  if (raw === undefined) {
    return undefined;
  }
  let value;
  try {
    value = JSON.parse(raw);
  } catch (error) {
    throw new StepFailure(`Failed to parse JSON for input '${name}': ${error.message}`);
  }
  if (object && (value === null || typeof value !== 'object' || Array.isArray(value))) {
    throw new StepFailure(`Input '${name}' must be a JSON object`);
  }
  return value;
}

// A value of any length and any lines, in the heredoc form GitHub documents for multiline
// values, with a delimiter the value does not contain.
function setOutput(name, value) {
  const text = value === undefined || value === null ? '' : String(value);
  const file = process.env.GITHUB_OUTPUT;
  if (!file) {
    console.log(`${name}=${text}`);
    return;
  }
  let delimiter;
  do {
    delimiter = `ghadelimiter_${crypto.randomUUID()}`;
  } while (text.includes(delimiter));
  fs.appendFileSync(file, `${name}<<${delimiter}\n${text}\n${delimiter}\n`);
}

function sha256(text) {
  return crypto.createHash('sha256').update(text).digest('hex');
}

// The create's Idempotency-Key. In a workflow it is the same for every attempt of the same step
// of the same run (GITHUB_RUN_ATTEMPT is left out on purpose: "Re-run jobs" must not make a
// second timer) and differs between steps, jobs, runs and bodies. Outside a workflow it is
// random: only this invocation's own retries share it.
function idempotencyKey(payload) {
  const given = getInput('idempotency-key');
  if (given) {
    return given;
  }
  const runId = process.env.GITHUB_RUN_ID;
  if (!runId) {
    return `minoots-action-${crypto.randomUUID()}`;
  }
  const scope = JSON.stringify([
    process.env.GITHUB_REPOSITORY || '',
    process.env.GITHUB_JOB || '',
    process.env.GITHUB_ACTION || '',
    payload,
  ]);
  return `gha-${runId}-${sha256(scope).slice(0, 40)}`;
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function retryAfterMs(response) {
  const raw = response.headers.get('retry-after');
  if (!raw) {
    return undefined;
  }
  const seconds = Number(raw);
  if (Number.isFinite(seconds) && seconds >= 0) {
    return Math.min(seconds * 1000, MAX_BACKOFF_MS);
  }
  const at = Date.parse(raw);
  return Number.isNaN(at) ? undefined : Math.min(Math.max(at - Date.now(), 0), MAX_BACKOFF_MS);
}

// One API call, retried on a connection error, a timeout, 429 and 503 (honouring Retry-After,
// else exponential backoff from 0.5 s). Any other answer is returned as it is.
async function call(method, url, { headers, body, timeoutMs, retries }) {
  for (let attempt = 0; ; attempt += 1) {
    let response;
    let failure;
    try {
      response = await fetch(url, { method, headers, body, signal: AbortSignal.timeout(timeoutMs) });
    } catch (error) {
      const cause = error.cause && error.cause.code ? ` (${error.cause.code})` : '';
      failure = error.name === 'TimeoutError' ? `timed out after ${timeoutMs} ms` : `${error.message}${cause}`;
    }
    if (response && !RETRY_STATUSES.has(response.status)) {
      return response;
    }
    if (attempt >= retries) {
      if (response) {
        return response;
      }
      throw new StepFailure(`Failed to contact MINOOTS at ${url}: ${failure}`);
    }
    const delay = (response && retryAfterMs(response)) ?? Math.min(500 * 2 ** attempt, MAX_BACKOFF_MS);
    const why = response ? `HTTP ${response.status}` : failure;
    console.log(`MINOOTS ${method} ${url}: ${why}; retry ${attempt + 1} of ${retries} in ${delay} ms`);
    await sleep(delay);
  }
}

async function errorText(response) {
  const text = await response.text().catch(() => '');
  try {
    const parsed = JSON.parse(text);
    if (parsed && typeof parsed.message === 'string') {
      return parsed.details ? `${parsed.message} ${JSON.stringify(parsed.details)}` : parsed.message;
    }
  } catch {
    // not JSON: the text as it is
  }
  return text.slice(0, 2000);
}

function buildPayload() {
  const tenantId = getInput('tenant-id');
  const requestedBy = getInput('requested-by') || 'github-action';
  const duration = getInput('duration');
  const fireAt = getInput('fire-at');
  const name = getInput('name') || 'github-timer';
  const region = getInput('region');
  if (!duration && !fireAt) {
    throw new StepFailure("Provide either the 'duration' or 'fire-at' input");
  }
  if (duration && fireAt) {
    throw new StepFailure("Provide only one of the 'duration' and 'fire-at' inputs");
  }
  const metadata = jsonInput('metadata', { object: true });
  const labels = jsonInput('labels', { object: true }) || {};
  const actionBundle = jsonInput('action-bundle', { object: true });
  const agentBinding = jsonInput('agent-binding', { object: true });
  if (region && !labels[REGION_LABEL_KEY]) {
    labels[REGION_LABEL_KEY] = region;
  }
  const payload = { requestedBy, name };
  if (tenantId) {
    payload.tenantId = tenantId;
  }
  if (duration) {
    // An integer input is milliseconds, as the API reads a JSON number.
    payload.duration = /^[0-9]+$/.test(duration) ? Number(duration) : duration;
  }
  if (fireAt) {
    payload.fireAt = fireAt;
  }
  if (metadata) {
    payload.metadata = metadata;
  }
  if (Object.keys(labels).length > 0) {
    payload.labels = labels;
  }
  if (actionBundle) {
    payload.actionBundle = actionBundle;
  }
  if (agentBinding) {
    payload.agentBinding = agentBinding;
  }
  return { payload, region };
}

async function waitForEnd(baseUrl, timerId, options) {
  const deadline = Date.now() + options.waitTimeoutMs;
  for (;;) {
    const response = await call('GET', `${baseUrl}/timers/${encodeURIComponent(timerId)}`, options);
    if (!response.ok) {
      throw new StepFailure(`MINOOTS API returned ${response.status} reading timer ${timerId}: ${await errorText(response)}`);
    }
    const timer = await response.json();
    if (TERMINAL.has(timer.status)) {
      return timer;
    }
    if (Date.now() >= deadline) {
      setOutput('status', timer.status);
      throw new StepFailure(
        `Timer ${timerId} is still ${timer.status} after ${options.waitTimeoutMs / 1000} s (wait-timeout-seconds)`,
      );
    }
    await sleep(Math.min(options.pollMs, Math.max(deadline - Date.now(), 0)));
  }
}

async function main() {
  const apiKey = getInput('api-key', { required: true });
  // Before anything else is printed: the runner then hides the key in every later line.
  console.log(`::add-mask::${apiKey}`);
  const baseUrl = (getInput('api-base-url') || 'https://api.minoots.com').replace(/\/+$/, '');
  const timeoutMs = numberInput('timeout-seconds', 10, { min: 0.1 }) * 1000;
  const retries = Math.floor(numberInput('retries', 4));
  const wait = booleanInput('wait');
  const waitTimeoutMs = numberInput('wait-timeout-seconds', 3600) * 1000;
  const pollMs = numberInput('poll-interval-seconds', 2, { min: 0.1 }) * 1000;
  const { payload, region } = buildPayload();

  const headers = {
    'content-type': 'application/json',
    accept: 'application/json',
    'x-api-key': apiKey,
    'idempotency-key': idempotencyKey(payload),
  };
  if (region) {
    headers['x-minoots-region'] = region;
  }
  const response = await call('POST', `${baseUrl}/timers`, {
    headers,
    body: JSON.stringify(payload),
    timeoutMs,
    retries,
  });
  if (!response.ok) {
    throw new StepFailure(`MINOOTS API returned ${response.status}: ${await errorText(response)}`);
  }
  const raw = await response.text();
  const data = JSON.parse(raw);
  const timerId = data.id;
  const labels = data.labels && typeof data.labels === 'object' ? data.labels : {};
  const replayed = response.status === 200 ? ' (already created by an earlier attempt of this step)' : '';
  console.log(`Scheduled timer ${timerId} (fires at ${data.fireAt})${replayed}`);
  setOutput('timer-id', timerId);
  setOutput('fire-at', data.fireAt);
  setOutput('region', labels[REGION_LABEL_KEY] || region || '');
  setOutput('response-json', raw);
  setOutput('status', data.status);
  if (!wait) {
    return;
  }

  const readHeaders = { accept: 'application/json', 'x-api-key': apiKey };
  const timer = await waitForEnd(baseUrl, timerId, {
    headers: readHeaders,
    timeoutMs,
    retries,
    waitTimeoutMs,
    pollMs,
  });
  setOutput('status', timer.status);
  setOutput('fired-at', timer.firedAt || '');
  setOutput('lateness-ms', timer.latenessMs ?? '');
  console.log(`Timer ${timerId} ended ${timer.status}`);
  if (timer.status !== 'settled') {
    const why = timer.failureReason || timer.cancelReason || '';
    throw new StepFailure(`Timer ${timerId} ended ${timer.status}${why ? `: ${why}` : ''}`);
  }
}

main().catch((error) => {
  const message = error instanceof StepFailure ? error.message : error.stack || String(error);
  // Workflow commands read one line: %, CR and LF escaped as the runner expects.
  console.log(`::error::${message.replace(/%/g, '%25').replace(/\r/g, '%0D').replace(/\n/g, '%0A')}`);
  process.exit(1);
});
