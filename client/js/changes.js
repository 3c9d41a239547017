// Which of two states of one sensor is newer, for a view whose read raced live changes: a
// change that arrives over /ws while a read is in flight may be older or newer than the read.
// /ws carries no sequence, but each change moves the sensor's own times, both written from the
// database's clock: a status change sets `statusChangedAt` (an expiry or a retirement too), a
// report without one moves `lastSeenAt` (a heartbeat, a new version). So the later
// `statusChangedAt`, then the later `lastSeenAt`, is the newer state. An operator's change of
// site or label, or a retirement of a sensor already offline, moves neither and ties with the
// state it changed: a tie is taken as news, which is safe because /ws brings a sensor's changes
// in order and ends with its latest.

// An instant of the API or of /ws in microseconds since the epoch: the two write the same
// instant differently ("…Z" and "…+00:00"), and a Date keeps only milliseconds, within which a
// sensor can report twice. Nothing (a sensor never seen) comes before everything.
export function instant(iso) {
  if (!iso) return -Infinity;
  const fraction = /\.(\d+)/.exec(iso)?.[1] ?? "";
  const whole = Date.parse(iso.replace(/\.\d+/, ""));
  return whole * 1000 + Number(fraction.padEnd(6, "0").slice(0, 6));
}

// Whether `change` is older than `shown` (a state read from the API), so must not replace it.
export function older(change, shown) {
  const changed = instant(change.statusChangedAt);
  const read = instant(shown.statusChangedAt);
  if (changed !== read) return changed < read;
  return instant(change.lastSeenAt) < instant(shown.lastSeenAt);
}
