// Wires the views together: the address picks the view (the fleet list or a sensor's page), the
// live connection feeds whichever is shown, uploads refresh the catalogue, the Alerts panel keeps
// to itself, and a reconnect or a resync reloads what is on screen.

import { Alerts } from "./alerts.js";
import { refreshTimes } from "./format.js";
import { Catalogue } from "./catalogue.js";
import { History } from "./history.js";
import { Live } from "./live.js";
import { Provisioner } from "./provision.js";
import { Router, listHash } from "./router.js";
import { SensorView } from "./sensor.js";
import { Sites } from "./sites.js";
import { Summary } from "./summary.js";
import { SensorTable } from "./table.js";
import { Unreleased } from "./unreleased.js";
import { Uploader } from "./upload.js";

const TICK = 1000; // ms between refreshes of the "12 s ago" texts
const RESYNC_QUIET = 1000; // ms: resync requests closer together than this are merged
const SIDE_QUIET = 5000; // ms: the sites reload at most this often

const byId = (id) => document.getElementById(id);

// `work` at once, then at most once per `quiet` ms however often it is asked for.
function throttled(work, quiet) {
  let blocked = false;
  let again = false;
  const run = () => {
    if (blocked) {
      again = true;
      return;
    }
    work();
    blocked = true;
    setTimeout(() => {
      blocked = false;
      if (again) {
        again = false;
        run();
      }
    }, quiet);
  };
  return run;
}

const summary = new Summary({
  counts: {
    total: byId("count-total"),
    online: byId("count-online"),
    offline: byId("count-offline"),
    never: byId("count-never"),
  },
  chart: byId("version-chart"),
});

const fleetHistory = new History({
  chart: byId("history-chart"),
  range: byId("history-range"),
  now: byId("history-now"),
});

const catalogue = new Catalogue({ table: byId("catalogue") });
const unreleased = new Unreleased({ list: byId("unreleased") });
const sites = new Sites({ list: byId("sites"), options: byId("site-options") });

let live;
let router;
let view = null; // "list" or "sensor"

const table = new SensorTable({
  table: byId("sensor-table"),
  form: byId("filters"),
  pager: document.querySelector(".pager"),
  pageInfo: byId("page-info"),
  caption: byId("sensor-caption"),
  notice: byId("sensor-notice"),
  navigate: (params, { replace }) => {
    // A search typed just before leaving the list fires after it: it must not replace the
    // address (and history entry) of the view shown now.
    if (view !== "list") return;
    if (!replace) return router.navigate(listHash(params));
    router.remember(listHash(params));
    table.show(params);
  },
  // While a page is read, sensors leaving the filter too: one of the rows it will show may.
  watch: (serials, filter) =>
    view === "list" ? live.subscribe(serials, filter, { leaving: true }) : Promise.resolve(),
  onPage: (serials, filter) => {
    if (view === "list") live.subscribe(serials, filter);
  },
});

const sensorView = new SensorView({
  section: byId("sensor-view"),
  onShow: (serial) => live.subscribe([serial]),
});
byId("sensor-older").addEventListener("click", () => sensorView.older());

// "Skip to the sensor list" moves the focus; followed as a link, its `#sensors` was read as a
// list address and reset the list's filters, sort and page. From a sensor's page it returns
// to the list as it was left.
document.querySelector("a.skip").addEventListener("click", (event) => {
  event.preventDefault();
  if (view === "sensor") location.hash = byId("sensor-back").getAttribute("href");
  byId("sensors").focus();
});

function route(where) {
  view = where.view;
  byId("fleet").hidden = view !== "list";
  byId("sensor-view").hidden = view !== "sensor";
  if (view === "sensor") {
    sensorView.show(where.serial);
    byId("sensor-heading").focus(); // keyboard and screen reader users land on the new view
    return;
  }
  byId("sensor-back").href = location.hash || "#/";
  table.show(where.params);
}

const reloadSites = throttled(() => sites.load(), SIDE_QUIET);

const resync = throttled(() => {
  if (view === "sensor") sensorView.show(sensorView.serial);
  else table.load();
  catalogue.load();
  reloadSites();
}, RESYNC_QUIET);

live = new Live({
  banner: byId("connection"),
  onSensors: (items) => (view === "sensor" ? sensorView.update(items) : table.update(items)),
  onSummary: (totals) => {
    summary.render(totals);
    fleetHistory.live(totals);
    table.setVersions(totals.versions.map((v) => v.version));
    table.fleet(totals);
    if (totals.unreleased) unreleased.render(totals.unreleased);
    reloadSites();
  },
  onResync: resync,
});

new Uploader({
  zone: byId("dropzone"),
  input: byId("file-input"),
  list: byId("uploads"),
  dialog: byId("api-key-dialog"),
  onUploaded: () => {
    catalogue.load();
    unreleased.load();
  },
});

new Provisioner({
  form: byId("provision-form"),
  result: byId("provision-result"),
  dialog: byId("api-key-dialog"),
  onAdded: () => {
    resync();
    sites.load(); // new sites at once, whatever the throttle
  },
});

router = new Router(route);
new Alerts({
  form: byId("webhook-form"),
  table: byId("webhooks"),
  message: byId("webhook-message"),
  dialog: byId("api-key-dialog"),
}).start();

live.start();
router.dispatch();
fleetHistory.start();
catalogue.load();
unreleased.load();
setInterval(() => refreshTimes(), TICK);
