// Wires the views together: the live connection feeds the table and the summary; uploads
// refresh the catalogue; the Alerts panel keeps to itself; a reconnect or a resync reloads what is on screen.

import { Alerts } from "./alerts.js";
import { refreshTimes } from "./format.js";
import { Catalogue } from "./catalogue.js";
import { Live } from "./live.js";
import { Summary } from "./summary.js";
import { SensorTable } from "./table.js";
import { Uploader } from "./upload.js";

const TICK = 1000; // ms between refreshes of the "12 s ago" texts
const RESYNC_QUIET = 1000; // ms: resync requests closer together than this are merged

const byId = (id) => document.getElementById(id);

const summary = new Summary({
  counts: {
    total: byId("count-total"),
    online: byId("count-online"),
    offline: byId("count-offline"),
    never: byId("count-never"),
  },
  chart: byId("version-chart"),
});

const catalogue = new Catalogue({ table: byId("catalogue") });

let live;
const table = new SensorTable({
  table: byId("sensor-table"),
  form: byId("filters"),
  pager: document.querySelector(".pager"),
  pageInfo: byId("page-info"),
  caption: byId("sensor-caption"),
  onPage: (serials) => live.subscribe(serials),
});

// Reload at once, then at most once per RESYNC_QUIET however often the server asks.
let resyncBlocked = false;
let resyncAgain = false;
function resync() {
  if (resyncBlocked) {
    resyncAgain = true;
    return;
  }
  table.load();
  catalogue.load();
  resyncBlocked = true;
  setTimeout(() => {
    resyncBlocked = false;
    if (resyncAgain) {
      resyncAgain = false;
      resync();
    }
  }, RESYNC_QUIET);
}

live = new Live({
  banner: byId("connection"),
  onSensors: (items) => table.update(items),
  onSummary: (totals) => {
    summary.render(totals);
    table.setVersions(totals.versions.map((v) => v.version));
  },
  onResync: resync,
});

new Uploader({
  zone: byId("dropzone"),
  input: byId("file-input"),
  list: byId("uploads"),
  dialog: byId("api-key-dialog"),
  onUploaded: () => catalogue.load(),
});

new Alerts({
  form: byId("webhook-form"),
  table: byId("webhooks"),
  message: byId("webhook-message"),
  dialog: byId("api-key-dialog"),
}).start();

live.start();
table.load();
catalogue.load();
setInterval(() => refreshTimes(), TICK);
