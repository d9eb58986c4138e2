// The SocketIO link. A followed run gets every event of its metrics.jsonl exactly once and in
// order: events carry their index; a duplicate is dropped, a gap triggers a catch-up from
// the last index we have (also done on every reconnect).

export function createLive() {
  const socket = window.io({ transports: ["websocket", "polling"] });
  const followed = new Map(); // run -> {last, onEvents, resyncing}

  const subscribe = (run) => socket.emit("subscribe", { run, after: followed.get(run).last });

  socket.on("connect", () => { for (const run of followed.keys()) subscribe(run); });
  socket.on("metrics", ({ run, start, events }) => {
    const state = followed.get(run);
    if (!state) return;
    if (start <= state.last + 1) state.resyncing = false;
    const fresh = [];
    for (let i = 0; i < events.length; i++) {
      const index = start + i;
      if (index <= state.last) continue;
      if (index > state.last + 1) {
        if (!state.resyncing) { state.resyncing = true; subscribe(run); }
        break;
      }
      state.last = index;
      fresh.push(events[i]);
    }
    if (fresh.length) state.onEvents(fresh);
  });

  return {
    socket,
    on: (name, handler) => socket.on(name, handler),
    follow(run, onEvents) {
      followed.set(run, { last: -1, onEvents, resyncing: false });
      if (socket.connected) subscribe(run);
      return () => { followed.delete(run); socket.emit("unsubscribe", { run }); };
    },
  };
}
