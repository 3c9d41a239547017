// The address is the view: `#/sensors/{serial}` is a sensor's page, anything else the fleet
// list with its filters, sort and page as query parameters (`#/?status=offline&page=3`).
// Views change the address with `navigate` (a history entry, so Back and Forward work) or
// `remember` (the same entry, for typing); an address edited by hand or a Back/Forward step
// reaches the views through the same `onRoute` callback.

const SENSOR = /^#\/sensors\/(.+)$/;

export function parse(hash = location.hash) {
  const sensor = SENSOR.exec(hash);
  if (sensor) return { view: "sensor", serial: decoded(sensor[1]) };
  // "#/?a=b" now; "#a=b" is how older links wrote the list's parameters.
  const query = hash.replace(/^#\/?\??/, "");
  return { view: "list", params: new URLSearchParams(query) };
}

// An address edited by hand may hold a `%` that starts no escape (`#/sensors/100%`): it is then
// taken as it is, not left to throw (which kept the previous view under the new address).
function decoded(text) {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

export function sensorHash(serial) {
  return `#/sensors/${encodeURIComponent(serial)}`;
}

export function listHash(params) {
  const query = params.toString();
  return query ? `#/?${query}` : "#/";
}

export class Router {
  constructor(onRoute) {
    this.onRoute = onRoute;
    this.current = null;
    // popstate: Back/Forward; hashchange: an address edited by hand or a plain link followed.
    window.addEventListener("popstate", () => this.dispatch());
    window.addEventListener("hashchange", () => this.dispatch());
  }

  dispatch() {
    if (location.hash === this.current) return; // popstate and hashchange for one step
    this.current = location.hash;
    this.onRoute(parse());
  }

  // A new history entry for `hash`, then the view it names.
  navigate(hash) {
    if (hash === location.hash) return;
    history.pushState(null, "", hash);
    this.dispatch();
  }

  // Record the view's state in the current entry without showing anything new.
  remember(hash) {
    history.replaceState(null, "", hash);
    this.current = location.hash;
  }
}
