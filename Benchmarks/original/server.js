// The original article's signaling server, written again for this repository as a benchmark
// anchor: Express and node-redis, the same routes, the same Redis command sequence, and one
// Redis connection per event stream (Benchmarks/README.md says how to run it).
//
// Faithful to the design, not to its bugs: node-redis 4 (promises, no bluebird), HS256 tokens
// with Node's crypto (Debian has no jsonwebtoken), and the disconnect fan-out awaits a list of
// promises where the article's `Promise.all(peerIds.forEach(...))` would crash the process.
//
//   PORT=8091 REDIS_URL=redis://127.0.0.1:6390 TOKEN_SECRET=... node server.js
"use strict";

const crypto = require("crypto");
const express = require("express");
const redis = require("redis");

const port = Number(process.env.PORT || 8091);
const redisURL = process.env.REDIS_URL || "redis://127.0.0.1:6379";
const secret = process.env.TOKEN_SECRET || crypto.randomBytes(32).toString("hex");

// --- Tokens: HS256, payload {id, username, iat, exp}, one hour (the article's /access) ---

const base64url = (buffer) => Buffer.from(buffer).toString("base64url");
const sign = (text) => crypto.createHmac("sha256", secret).update(text).digest();

function issueToken(user) {
  const now = Math.floor(Date.now() / 1000);
  const header = base64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const payload = base64url(JSON.stringify({ ...user, iat: now, exp: now + 3600 }));
  return `${header}.${payload}.${base64url(sign(`${header}.${payload}`))}`;
}

function verifyToken(token) {
  const [header, payload, signature] = String(token).split(".");
  if (!header || !payload || !signature) return null;
  try {
    if (JSON.parse(Buffer.from(header, "base64url")).alg !== "HS256") return null;
    const expected = sign(`${header}.${payload}`);
    const given = Buffer.from(signature, "base64url");
    if (given.length !== expected.length || !crypto.timingSafeEqual(given, expected)) return null;
    const claims = JSON.parse(Buffer.from(payload, "base64url"));
    if (!(claims.exp > Date.now() / 1000)) return null;
    return { id: claims.id, username: claims.username };
  } catch {
    return null;
  }
}

function auth(req, res, next) {
  const header = req.headers.authorization || "";
  const token = header.startsWith("Bearer ") ? header.slice(7) : req.query.token;
  if (!token) return res.sendStatus(401);
  const user = verifyToken(token);
  if (!user) return res.sendStatus(403);
  req.user = user;
  next();
}

// --- The server ---

const app = express();
app.use(express.json());
const redisClient = redis.createClient({ url: redisURL });
const clients = {};

app.post("/access", (req, res) => {
  if (!req.body || !req.body.username) return res.sendStatus(403);
  const user = { id: crypto.randomUUID(), username: req.body.username };
  res.json({ token: issueToken(user) });
});

app.get("/connect", auth, async (req, res) => {
  if (req.headers.accept !== "text/event-stream") return res.sendStatus(404);
  res.setHeader("Cache-Control", "no-cache");
  res.setHeader("Content-Type", "text/event-stream");
  res.setHeader("Access-Control-Allow-Origin", "*");
  res.flushHeaders();

  // One Redis connection per stream, subscribed to the peer's channel, as the article has it.
  const client = {
    id: req.user.id,
    user: req.user,
    redis: redisClient.duplicate(),
    emit: (event, data) => {
      res.write(`id: ${crypto.randomUUID()}\n`);
      res.write(`event: ${event}\n`);
      res.write(`data: ${JSON.stringify(data)}\n\n`);
    },
  };
  clients[client.id] = client;
  req.on("close", () => disconnected(client));
  await client.redis.connect();
  await client.redis.subscribe(`messages:${client.id}`, (message) => {
    const msg = JSON.parse(message);
    client.emit(msg.event, msg.data);
  });
  client.emit("connected", { user: req.user });
  client.ping = setInterval(() => client.emit("ping"), 10000);
});

app.post("/:roomId/join", auth, async (req, res) => {
  const roomId = req.params.roomId;
  await redisClient.sAdd(`${req.user.id}:channels`, roomId);
  const peerIds = await redisClient.sMembers(`channels:${roomId}`);
  peerIds.forEach((peerId) => {
    redisClient.publish(`messages:${peerId}`, JSON.stringify({
      event: "add-peer",
      data: { peer: req.user, roomId, offer: false },
    }));
    redisClient.publish(`messages:${req.user.id}`, JSON.stringify({
      event: "add-peer",
      data: { peer: { id: peerId }, roomId, offer: true },
    }));
  });
  await redisClient.sAdd(`channels:${roomId}`, req.user.id);
  return res.sendStatus(200);
});

app.post("/relay/:peerId/:event", auth, (req, res) => {
  const msg = { event: req.params.event, data: { peer: req.user, data: req.body } };
  redisClient.publish(`messages:${req.params.peerId}`, JSON.stringify(msg));
  return res.sendStatus(200);
});

async function disconnected(client) {
  clearInterval(client.ping);
  delete clients[client.id];
  client.redis.quit().catch(() => {});
  await redisClient.del(`messages:${client.id}`);
  const roomIds = await redisClient.sMembers(`${client.id}:channels`);
  await redisClient.del(`${client.id}:channels`);
  await Promise.all(roomIds.map(async (roomId) => {
    await redisClient.sRem(`channels:${roomId}`, client.id);
    const peerIds = await redisClient.sMembers(`channels:${roomId}`);
    const msg = JSON.stringify({ event: "remove-peer", data: { peer: client.user, roomId } });
    await Promise.all(peerIds.filter((peerId) => peerId !== client.id).map((peerId) => redisClient.publish(`messages:${peerId}`, msg)));
  }));
}

redisClient.connect().then(() => {
  app.listen(port, "127.0.0.1", () => console.log(`original design on node ${process.version}: http://127.0.0.1:${port}, redis ${redisURL}`));
});
