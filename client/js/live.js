// The live connection (/ws): subscribes to the sensors on screen (and the filter they were
// chosen by), reconnects with exponential backoff, and asks the page to resynchronise after a
// reconnect or when the server says so. While disconnected, what is on screen is marked stale
// with the time it was last known to be current ("as of 14:02:11").

import { serverNow, syncClock } from "./format.js";

const BACKOFF_FIRST = 500; // ms
const BACKOFF_MAX = 15000; // ms
const SILENCE_FACTOR = 2.5; // pings the server may skip before we call the connection dead
const CONFIRM_WAIT = 3000; // ms a view waits for its subscription before reading anyway

export class Live {
  constructor({ banner, onSensors, onSummary, onResync }) {
    this.banner = banner;
    this.handlers = { onSensors, onSummary, onResync };
    this.serials = [];
    this.filter = null;
    this.leaving = false;
    this.heardAt = null; // server time of the last message: what is on screen is as of then
    this.socket = null;
    this.delay = BACKOFF_FIRST;
    this.connectedBefore = false;
    this.pingInterval = 15;
    this.watchdog = null;
    this.retryTimer = null;
    this.pending = 0;
    this.waiters = []; // resolvers waiting for the next subscription sent to be confirmed
    this.unconfirmed = []; // per subscription sent, in order: the resolvers its answer settles
  }

  start() {
    this.connect();
    // Coming back to the tab, or the network coming back, is worth an immediate retry.
    window.addEventListener("online", () => this.retryNow());
  }

  // The sensors on screen; with a filter, also the sensors that enter it. Resolves once the
  // server says the subscription is in force, so that a view reading what it shows after that
  // misses no change made after its read. Sent with the next hello while connecting; resolves
  // at once while disconnected (the reconnection reloads every view), and after CONFIRM_WAIT
  // at most, so a slow server delays a view but never stops it.
  // With `leaving`, also the sensors the filter admitted before a transition took them out of
  // it (a page being read needs them: its rows are not known yet).
  subscribe(serials, filter = null, { leaving = false } = {}) {
    this.serials = serials;
    this.filter = filter;
    this.leaving = leaving;
    const confirmed = new Promise((resolve) => {
      this.waiters.push(resolve);
      setTimeout(resolve, CONFIRM_WAIT);
    });
    this.sendSubscribe();
    if (this.socket?.readyState !== WebSocket.CONNECTING && this.socket?.readyState !== WebSocket.OPEN) {
      this.settle();
    }
    return confirmed;
  }

  // Subscriptions sent and not yet confirmed: the banner's data-pending, so that whoever needs
  // to know (a test, a script) can tell when changes to the sensors on screen are flowing.
  sendSubscribe() {
    const message = { type: "subscribe", serials: this.serials };
    if (this.filter) message.filter = this.filter;
    if (this.filter && this.leaving) message.leaving = true;
    if (!this.send(message)) return;
    this.setPending(this.pending + 1);
    this.unconfirmed.push(this.waiters);
    this.waiters = [];
  }

  // The server answered the oldest subscription sent (`subscribed`, or an `error` refusing it:
  // the previous one then stays in force).
  confirmed() {
    this.setPending(Math.max(0, this.pending - 1));
    for (const resolve of this.unconfirmed.shift() ?? []) resolve();
  }

  // No answer will come (the connection is gone): nobody waits for one.
  settle() {
    for (const resolve of [...this.unconfirmed.flat(), ...this.waiters]) resolve();
    this.unconfirmed = [];
    this.waiters = [];
  }

  setPending(count) {
    this.pending = count;
    this.banner.dataset.pending = String(count);
  }

  send(message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(message));
      return true;
    }
    return false;
  }

  connect() {
    clearTimeout(this.retryTimer);
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(`${scheme}//${location.host}/ws`);
    this.socket = socket;
    this.setPending(0);
    this.settle(); // answers on the old connection never come; hello subscribes anew
    this.show(this.connectedBefore ? "reconnecting" : "connecting");
    socket.addEventListener("message", (event) => this.receive(event.data));
    socket.addEventListener("close", () => {
      if (this.socket !== socket) return;
      this.settle();
      this.scheduleRetry();
    });
  }

  receive(data) {
    this.feedWatchdog();
    this.heardAt = serverNow();
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return;
    }
    switch (message.type) {
      case "hello":
        syncClock(message.serverTime);
        this.pingInterval = message.pingInterval || this.pingInterval;
        this.delay = BACKOFF_FIRST;
        this.show("live");
        this.sendSubscribe();
        if (this.connectedBefore) this.handlers.onResync("reconnected");
        this.connectedBefore = true;
        break;
      case "subscribed":
        this.confirmed();
        break;
      case "ping":
        this.send({ type: "pong" });
        break;
      case "sensor":
        this.handlers.onSensors(message.sensors);
        break;
      case "summary":
        this.handlers.onSummary(message);
        break;
      case "resync":
        this.handlers.onResync(message.reason);
        break;
      case "error":
        // Only subscriptions can be refused (a pong cannot): this answers the oldest one.
        console.warn("live connection refused a message:", message.error);
        this.confirmed();
        break;
      default:
        break;
    }
  }

  // A server that says nothing for a few ping intervals is gone, even if TCP has not noticed.
  feedWatchdog() {
    clearTimeout(this.watchdog);
    this.watchdog = setTimeout(() => this.abandon(), this.pingInterval * SILENCE_FACTOR * 1000);
  }

  // Give up on the connection now: stale and retrying at once, without waiting for its close
  // event, which a dead network delays until the browser gives up on the closing handshake
  // (up to a minute, all of it shown as "Live").
  abandon() {
    const socket = this.socket;
    if (!socket) return;
    this.socket = null; // its close event, whenever it comes, is about a connection given up
    socket.close();
    this.settle();
    this.scheduleRetry();
  }

  scheduleRetry() {
    clearTimeout(this.watchdog);
    const wait = this.delay * (0.8 + Math.random() * 0.4);
    this.delay = Math.min(this.delay * 2, BACKOFF_MAX);
    this.show("reconnecting", Math.ceil(wait / 1000));
    this.retryTimer = setTimeout(() => this.connect(), wait);
  }

  retryNow() {
    if (!this.socket || this.socket.readyState === WebSocket.CLOSED) this.connect();
  }

  show(state, seconds) {
    const text = {
      connecting: "Connecting…",
      live: "Live",
      reconnecting: seconds ? `Reconnecting… (next try in ${seconds} s)` : "Reconnecting…",
    }[state];
    this.banner.dataset.state = state;
    const stale = state !== "live" && this.heardAt != null;
    const asOf = stale ? `as of ${new Date(this.heardAt).toLocaleTimeString()}` : "";
    this.banner.textContent = stale ? `${text} · showing data ${asOf}` : text;
    // Everything on screen is as old as the last message: say so where the numbers are.
    if (stale) document.body.dataset.stale = asOf;
    else delete document.body.dataset.stale;
    for (const note of document.querySelectorAll(".as-of")) {
      note.textContent = stale ? ` · ${asOf}` : "";
      note.hidden = !stale;
    }
  }
}
