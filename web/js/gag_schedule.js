// The schedule math of gag_core/schedule.py, for the GAG Schedule node's preview.
//
// Mirrors check_window, ramp_multiplier and window_position, and how nodes/guidance.py combines
// them: inside [start, end] λ is multiplied by the ramp at the step's position in the window;
// outside, GAG is off and the layer computes plain attention. Off is not the same as a
// multiplier of 0 (which still uses the sparse retrieval), so callers get null for off.
// tests/comfy/test_frontend.py compares sampled values with the Python functions.
// Pure module: no DOM, no ComfyUI imports.

export const RAMPS = Object.freeze(["constant", "linear up", "linear down", "cosine up", "cosine down"]);

export class ScheduleError extends Error {
  constructor(message) {
    super(message);
    this.name = "ScheduleError";
  }
}

function isNumber(v) {
  return typeof v === "number" && !Number.isNaN(v);
}

// Python's repr of a float as the messages print it (1.0, not 1).
function pyFloat(v) {
  return Number.isInteger(v) ? v.toFixed(1) : String(v);
}

export function checkWindow(start, end) {
  for (const [name, value] of [["start_percent", start], ["end_percent", end]]) {
    if (!isNumber(value) || !(value >= 0 && value <= 1)) {
      throw new ScheduleError(`${name} must be a number in [0, 1] (a fraction of the sampling ` +
                              `run); got ${isNumber(value) ? pyFloat(value) : String(value)}`);
    }
  }
  if (start > end) {
    throw new ScheduleError(`start_percent (${pyFloat(start)}) must not be after end_percent ` +
                            `(${pyFloat(end)}); the window runs from start to end of sampling`);
  }
  return [start, end];
}

export function rampMultiplier(position, ramp) {
  const p = Math.min(Math.max(position, 0), 1);
  switch (ramp) {
    case "constant": return 1;
    case "linear up": return p;
    case "linear down": return 1 - p;
    case "cosine up": return 0.5 * (1 - Math.cos(Math.PI * p));
    case "cosine down": return 0.5 * (1 + Math.cos(Math.PI * p));
    default:
      throw new ScheduleError(`ramp must be one of ${RAMPS.join(", ")}; got '${ramp}'`);
  }
}

export function windowPosition(percent, start, end) {
  if (end <= start) return 0;
  return Math.min(Math.max((percent - start) / (end - start), 0), 1);
}

// λ multiplier at sampling progress `percent` ∈ [0, 1], or null where GAG is off.
export function scheduleMultiplier(percent, start, end, ramp) {
  if (percent < start || percent > end) return null;
  return rampMultiplier(windowPosition(percent, start, end), ramp);
}

// `count` evenly spaced samples over [0, 1] plus the window's own edges (so a short or
// zero-length window is never missed): [[percent, multiplier|null], …] sorted by percent.
export function sampleSchedule(start, end, ramp, count = 201) {
  checkWindow(start, end);
  rampMultiplier(0, ramp);
  const xs = new Set();
  for (let i = 0; i < count; i++) xs.add(i / (count - 1));
  xs.add(start);
  xs.add(end);
  return [...xs].sort((a, b) => a - b).map((p) => [p, scheduleMultiplier(p, start, end, ramp)]);
}
