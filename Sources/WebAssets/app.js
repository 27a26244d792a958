// Switchboard demo: a chat where every browser in the room talks to every other over a
// WebRTC data channel. Switchboard only introduces the browsers and carries their offers,
// answers and ICE candidates; the messages themselves never touch the server.
"use strict";

const roomId = decodeURIComponent(location.pathname.slice(1));
const username = new URLSearchParams(location.search).get("name") || "guest-" + Math.random().toString(36).slice(2, 6);
const iceServers = (new URLSearchParams(location.search).get("stun") || "").split(",").filter(Boolean).map((url) => ({ urls: url }));

const peers = new Map(); // peer id -> { user, pc, channel, pendingCandidates, remoteDescriptionSet }
let token = null;
let me = null;
let source = null;
let lastEventId = ""; // where a new EventSource resumes the session (renewing the token)

const $ = (id) => document.getElementById(id);
$("room").textContent = roomId;
$("via").textContent = "via " + location.host;

function setState(state) {
  $("state").textContent = state;
  $("state").className = "state " + state;
  document.body.dataset.stream = state;
}

function renderPeers() {
  const list = $("peers");
  list.replaceChildren();
  if (me) list.append(item(me.username + " (you)", "me open"));
  for (const [id, peer] of peers) {
    const open = peer.channel && peer.channel.readyState === "open";
    const li = item(peer.user.username || id, open ? "open" : "");
    li.dataset.peer = id;
    list.append(li);
  }
  document.body.dataset.peers = String(peers.size);
  document.body.dataset.openChannels = String([...peers.values()].filter((p) => p.channel && p.channel.readyState === "open").length);
}

function item(text, className) {
  const li = document.createElement("li");
  li.textContent = text;
  li.className = className;
  return li;
}

function show(who, text, system) {
  const li = document.createElement("li");
  if (system) {
    li.className = "system";
    li.textContent = text;
  } else {
    const name = document.createElement("span");
    name.className = "who";
    name.textContent = who;
    li.append(name, document.createTextNode(": " + text));
  }
  $("messages").append(li);
  li.scrollIntoView({ block: "end" });
}

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: "Bearer " + token },
    body: JSON.stringify(body || {}),
  });
  if (!response.ok) throw new Error(path + " answered " + response.status);
}

const relay = (peerId, event, data) => post(`/relay/${encodeURIComponent(peerId)}/${event}`, data);

function closePeer(id) {
  const peer = peers.get(id);
  if (!peer) return;
  peers.delete(id);
  peer.pc.close();
  show(null, `${peer.user.username || id} left`, true);
  renderPeers();
}

function wireChannel(id, channel) {
  const peer = peers.get(id);
  peer.channel = channel;
  channel.onopen = () => {
    show(null, `connected to ${peer.user.username} directly`, true);
    renderPeers();
  };
  channel.onclose = renderPeers;
  channel.onmessage = (event) => show(peer.user.username, event.data);
}

// add-peer: `offer` says whether we make the WebRTC offer (the joiner does).
async function addPeer({ peer: user, offer }) {
  if (peers.has(user.id)) closePeer(user.id); // a fresh introduction replaces a stale one
  const pc = new RTCPeerConnection({ iceServers });
  const peer = { user, pc, channel: null, pendingCandidates: [], remoteDescriptionSet: false };
  peers.set(user.id, peer);
  renderPeers();
  pc.onicecandidate = (event) => {
    if (event.candidate) relay(user.id, "ice-candidate", event.candidate.toJSON()).catch(console.warn);
  };
  pc.ondatachannel = (event) => wireChannel(user.id, event.channel);
  if (offer) {
    wireChannel(user.id, pc.createDataChannel("chat"));
    await pc.setLocalDescription(await pc.createOffer());
    await relay(user.id, "session-description", pc.localDescription.toJSON());
  }
}

async function setRemoteDescription(peer, description) {
  await peer.pc.setRemoteDescription(description);
  peer.remoteDescriptionSet = true;
  // Candidates that arrived before the description could not be added then.
  for (const candidate of peer.pendingCandidates.splice(0)) await peer.pc.addIceCandidate(candidate);
}

async function sessionDescription({ peer: user, data: description }) {
  const peer = peers.get(user.id);
  if (!peer) return;
  await setRemoteDescription(peer, description);
  if (description.type === "offer") {
    await peer.pc.setLocalDescription(await peer.pc.createAnswer());
    await relay(user.id, "session-description", peer.pc.localDescription.toJSON());
  }
}

async function iceCandidate({ peer: user, data: candidate }) {
  const peer = peers.get(user.id);
  if (!peer) return;
  if (peer.remoteDescriptionSet) await peer.pc.addIceCandidate(candidate);
  else peer.pendingCandidates.push(candidate);
}

function on(source, event, handler) {
  source.addEventListener(event, (message) => {
    if (message.lastEventId) lastEventId = message.lastEventId;
    Promise.resolve(handler(JSON.parse(message.data))).catch((error) => console.warn(event, error));
  });
}

// The stream carries the token in its URL, and a token lasts an hour: a reconnect after that
// would be refused for good. So the page renews its token once 80% of its life has passed and
// opens a new EventSource with it, resuming where the old one stopped.
function claims(jwt) {
  return JSON.parse(atob(jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
}

function scheduleRenewal() {
  const { iat, exp } = claims(token);
  setTimeout(renewToken, Math.max(1000, (iat + 0.8 * (exp - iat)) * 1000 - Date.now()));
}

async function renewToken() {
  try {
    const response = await fetch("/access", { method: "POST", headers: { Authorization: "Bearer " + token } });
    if (!response.ok) throw new Error("/access answered " + response.status);
    token = (await response.json()).token;
    openStream();
    scheduleRenewal();
  } catch (error) {
    console.warn("token renewal", error);
    setTimeout(renewToken, 10000);
  }
}

function openStream() {
  if (source) source.close(); // closed first, so the old stream is not "replaced" by the new one
  const resume = lastEventId ? "&lastEventId=" + encodeURIComponent(lastEventId) : "";
  const stream = new EventSource("/connect?token=" + encodeURIComponent(token) + resume);
  source = stream;
  stream.onopen = () => setState("connected");
  stream.onerror = () => setState(stream.readyState === EventSource.CLOSED ? "closed" : "reconnecting");
  on(stream, "connected", async ({ user, resumed }) => {
    me = user;
    // A fresh session (the old one could not be resumed) starts with no peers: forget ours.
    if (!resumed) for (const id of [...peers.keys()]) closePeer(id);
    setState("connected");
    renderPeers();
    await post(`/${encodeURIComponent(roomId)}/join`);
  });
  on(stream, "replaced", () => {
    stream.close(); // another tab took over this peer: do not reconnect and take it back
    setState("closed");
    show(null, "this page was replaced by another one of yours", true);
  });
  on(stream, "add-peer", addPeer);
  on(stream, "remove-peer", ({ peer }) => closePeer(peer.id));
  on(stream, "session-description", sessionDescription);
  on(stream, "ice-candidate", iceCandidate);
}

async function start() {
  setState("connecting");
  const response = await fetch("/access", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username }),
  });
  // With `--access off` the node hands out no tokens: say so rather than fail silently.
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error((body.error && body.error.message) || "/access answered " + response.status);
  }
  token = (await response.json()).token;
  openStream();
  scheduleRenewal();
}

$("send").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("text").value.trim();
  if (!text) return;
  for (const peer of peers.values()) {
    if (peer.channel && peer.channel.readyState === "open") peer.channel.send(text);
  }
  show(me ? me.username : "me", text);
  $("text").value = "";
});

start().catch((error) => {
  setState("closed");
  show(null, "could not start: " + error.message, true);
});
