import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A message received on a subscribed channel.
public struct PubSubMessage: Sendable {
    public var channel: String
    public var payload: ByteBuffer
}

/// Sharded pub/sub for everything on a node (`SSUBSCRIBE`, Redis 7: a channel belongs to a slot
/// like a key, and a single Redis serves it too): one subscriber connection per primary, each
/// channel subscribed on the primary that owns its slot. Channels are reference-counted: the
/// first `subscribe` of a channel sends SSUBSCRIBE and waits for Redis to confirm it, the last
/// `unsubscribe` sends SUNSUBSCRIBE. `run()` keeps a connection up to every primary, follows
/// the cluster's map (a channel whose slot moved is subscribed again at its new owner), and
/// after a reconnect subscribes to every channel still wanted.
public final class RedisSubscriber: Sendable {
    private let client: RedisClient
    /// Every message on every subscribed channel, in the order Redis sent them (unless an
    /// `onMessage` handler takes them instead).
    public let messages: AsyncStream<PubSubMessage>
    private let messageSink: AsyncStream<PubSubMessage>.Continuation
    private let onMessage: (@Sendable (PubSubMessage) -> Void)?
    private let onConnectionEvent: (@Sendable (RedisConnectionEvent) -> Void)?
    private let onInterrupted: (@Sendable (Shard) -> Void)?
    private let onResubscribed: (@Sendable (Shard) -> Void)?
    private let group: EventLoopGroup
    private let logger: Logger
    private let state = NIOLockedValueBox(State())

    private typealias Waiter = CheckedContinuation<Void, Error>
    /// Waits for a channel's confirmation without holding a reference: false if the channel
    /// stops being wanted first.
    private typealias Watcher = CheckedContinuation<Bool, Error>
    /// A primary, by address: each has a connection of its own, and its own continuity.
    public typealias Shard = RedisEndpoint.Address

    /// A channel the node wants, and where it stands.
    private struct Subscription {
        /// References held: confirmed subscribers, and `waiters` (which hold one each).
        var count = 0
        var confirmed = false
        /// The shard its latest SSUBSCRIBE went to; nil if none is under way or in force.
        var shard: Shard?
        var waiters: [UInt64: Waiter] = [:]
        var watchers: [UInt64: Watcher] = [:]
    }

    /// The subscriber connection to one primary.
    private struct Link {
        var endpoint: RedisEndpoint
        /// Tells this link from an earlier one to the same address whose task is still ending.
        var id: UInt64
        var connection: RedisConnection?
        var task: Task<Void, Never>?
        /// SSUBSCRIBEs sent on this connection whose confirmation has not come back, by channel.
        /// Only the confirmation of the last one counts: after SSUBSCRIBE, SUNSUBSCRIBE,
        /// SSUBSCRIBE the first confirmation comes before the channel is dropped again.
        var subscribesInFlight: [String: Int] = [:]
        /// SUNSUBSCRIBEs sent and not confirmed, by channel: a `sunsubscribe` beyond these is
        /// the server dropping the channel (its slot moved away).
        var unsubscribesInFlight: [String: Int] = [:]
        /// PINGs sent, or about to be, whose PONG has not come back. A PING follows SSUBSCRIBEs
        /// sent after a reconnect or a move: its reply says they all took.
        var pongsAwaited = 0
        /// The server refused a command on this connection (a stale map): it is being replaced.
        var broken = false

        var isUp: Bool { connection?.isActive ?? false }
    }

    private struct State {
        var topology: ClusterTopology?
        var links: [Shard: Link] = [:]
        var channels: [String: Subscription] = [:]
        var connectedWaiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
        /// Shards on whose channels messages may have been missed (a connection lost or not
        /// made, a channel moved there or dropped) and `onResubscribed` has not been called since.
        var interrupted: Set<Shard> = []
        var nextWaiter: UInt64 = 0

        mutating func waiterID() -> UInt64 {
            defer { nextWaiter += 1 }
            return nextWaiter
        }

        var isConnected: Bool { topology != nil && !links.isEmpty && links.values.allSatisfy(\.isUp) }

        /// Whether every channel of `shard` is as wanted on a live connection: nothing missed
        /// from now on can go unnoticed.
        func isSettled(_ shard: Shard) -> Bool {
            guard let link = links[shard] else { return false }
            return link.isUp && link.pongsAwaited == 0 && !link.broken
        }

        /// The live link of the primary owning `channel`.
        func liveOwner(of channel: String) -> Shard? {
            guard let owner = topology?.owner(of: channel)?.address, links[owner]?.isUp == true else { return nil }
            return owner
        }

        /// Sends SSUBSCRIBE for `channel` to the primary owning it now, unless it went there
        /// already; drops it where it was if that is elsewhere. Returns the shard written to.
        /// - Parameter resuming: the channel was wanted before (it moved, or its connection was
        ///   lost): messages published meanwhile at its owner are missed, so that shard is
        ///   interrupted.
        mutating func route(_ name: String, _ channel: inout Subscription, resuming: Bool) -> Shard? {
            let owner = liveOwner(of: name)
            guard channel.shard != owner || channel.shard == nil else { return nil }
            if let old = channel.shard { sendUnsubscribe(name, on: old) }
            // Messages published at the new owner before it is subscribed there are missed,
            // whether or not its connection is up yet.
            if resuming, let target = owner ?? topology?.owner(of: name)?.address { interrupted.insert(target) }
            channel.confirmed = false
            channel.shard = owner
            guard let owner, let connection = links[owner]?.connection else { return nil }
            links[owner]!.subscribesInFlight[name, default: 0] += 1
            connection.sendWithoutReply(["SSUBSCRIBE", name])
            return owner
        }

        /// The connection to `shard` is gone: its channels are subscribed nowhere until they are
        /// routed again. Returns those waiting for a confirmation, to be told it failed.
        mutating func detachChannels(from shard: Shard) -> ([Waiter], [Watcher]) {
            interrupted.insert(shard)
            return detachWaiting { $0.shard == shard }
        }

        /// Gives up the references of those waiting on channels that are subscribed nowhere
        /// (their slot's primary is not connected): they are told it is unavailable, rather
        /// than waiting for as long as it stays down.
        mutating func detachUnrouted() -> ([Waiter], [Watcher]) { detachWaiting { $0.shard == nil } }

        /// Takes the channels `matching` off their shard and returns those waiting on them. A
        /// failed subscribe holds no reference: its caller is told it failed.
        private mutating func detachWaiting(_ matching: (Subscription) -> Bool) -> ([Waiter], [Watcher]) {
            var waiters: [Waiter] = []
            var watchers: [Watcher] = []
            for (name, var channel) in channels where matching(channel) {
                waiters += channel.waiters.values
                watchers += channel.watchers.values
                channel.count -= channel.waiters.count
                channel.waiters = [:]
                channel.watchers = [:]
                channel.confirmed = false
                channel.shard = nil
                channels[name] = channel.count > 0 ? channel : nil
            }
            return (waiters, watchers)
        }

        /// Forgets a channel nothing holds any more, unsubscribing where it was subscribed.
        mutating func drop(_ name: String, _ channel: Subscription) {
            channels[name] = nil
            if let shard = channel.shard { sendUnsubscribe(name, on: shard) }
        }

        mutating func sendUnsubscribe(_ name: String, on shard: Shard) {
            guard let connection = links[shard]?.connection else { return }
            links[shard]!.unsubscribesInFlight[name, default: 0] += 1
            connection.sendWithoutReply(["SUNSUBSCRIBE", name])
        }

        /// Follows SSUBSCRIBEs sent to `shards` with a PING: its reply says they all took.
        mutating func ping(_ shards: Set<Shard>) {
            expectPongs(shards).forEach { $0.sendWithoutReply(["PING"]) }
        }

        /// Counts a PING as sent to each of `shards` that is connected, and returns the
        /// connections to send them on: for a caller that must send them later, outside the
        /// lock, while the shards count as unsettled from now.
        mutating func expectPongs(_ shards: Set<Shard>) -> [RedisConnection] {
            shards.compactMap { shard in
                guard let connection = links[shard]?.connection else { return nil }
                links[shard]!.pongsAwaited += 1
                return connection
            }
        }
    }

    /// - Parameter onMessage: if given, called with each message on the connection's event
    ///   loop, in order, instead of queueing it on `messages` (saves a task switch per message;
    ///   it must not block).
    /// - Parameter onInterrupted: called when messages on a shard's channels may have been
    ///   missed: its connection dropped or could not be made, a channel moved there (its slot
    ///   changed primary), or the server dropped one.
    /// - Parameter onResubscribed: called once a shard's connection is live and Redis has
    ///   confirmed each of its channels again after an interruption (and when it first
    ///   connects): messages published there from then on arrive; some before may not have.
    public init(
        client: RedisClient,
        group: EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "redis.subscriber"),
        onMessage: (@Sendable (PubSubMessage) -> Void)? = nil,
        onConnectionEvent: (@Sendable (RedisConnectionEvent) -> Void)? = nil,
        onInterrupted: (@Sendable (Shard) -> Void)? = nil,
        onResubscribed: (@Sendable (Shard) -> Void)? = nil
    ) {
        self.client = client
        self.onResubscribed = onResubscribed
        self.onInterrupted = onInterrupted
        self.onMessage = onMessage
        self.onConnectionEvent = onConnectionEvent
        self.group = group
        self.logger = logger
        (messages, messageSink) = AsyncStream.makeStream(of: PubSubMessage.self)
    }

    /// Whether there is a live subscriber connection to every primary.
    public var isConnected: Bool { state.withLockedValue { $0.isConnected } }

    /// Subscribes to `channel` (or adds a reference to it) and returns once Redis has confirmed
    /// the subscription, so every message published after this returns is delivered. Throws
    /// `RedisConnectionError` while the channel's primary is unreachable, and
    /// `CancellationError` if the task is cancelled first (it then holds no reference).
    public func subscribe(_ channel: String) async throws {
        enum Outcome { case unavailable, subscribed, waiting, cancelled }
        let id = state.withLockedValue { $0.waiterID() }
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (waiter: Waiter) in
                let outcome: Outcome = state.withLockedValue { state in
                    if Task.isCancelled { return .cancelled }
                    guard state.liveOwner(of: channel) != nil else { return .unavailable }
                    var entry = state.channels[channel, default: Subscription()]
                    entry.count += 1
                    defer { state.channels[channel] = entry }
                    if entry.confirmed { return .subscribed }
                    entry.waiters[id] = waiter
                    _ = state.route(channel, &entry, resuming: entry.count > 1)
                    return .waiting
                }
                switch outcome {
                case .unavailable: waiter.resume(throwing: RedisConnectionError.unavailable(retryAfterMilliseconds: 1000))
                case .subscribed: waiter.resume()
                case .cancelled: waiter.resume(throwing: CancellationError())
                case .waiting: break
                }
            }
        } onCancel: {
            // Gives back the reference the waiter held; the subscription itself, if Redis
            // confirms it later, stays until the last reference goes.
            let (waiter, watchers) = state.withLockedValue { state -> (Waiter?, [Watcher]) in
                guard let waiter = state.channels[channel]?.waiters.removeValue(forKey: id) else { return (nil, []) }
                state.channels[channel]?.count -= 1
                guard let entry = state.channels[channel], entry.count == 0 else { return (waiter, []) }
                state.drop(channel, entry)
                return (waiter, Array(entry.watchers.values))
            }
            waiter?.resume(throwing: CancellationError())
            watchers.forEach { $0.resume(returning: false) }
        }
    }

    /// Adds a reference to `channel` without waiting: SSUBSCRIBE goes out now if this is the
    /// first one and the channel's primary is connected, else after it reconnects. For callers
    /// that must take the reference in order with other state (under their own lock), and
    /// wait for the confirmation later with `waitUntilSubscribed`.
    public func retain(_ channel: String) {
        state.withLockedValue { state in
            var entry = state.channels[channel, default: Subscription()]
            entry.count += 1
            if entry.count == 1 { _ = state.route(channel, &entry, resuming: false) }
            state.channels[channel] = entry
        }
    }

    /// Waits until Redis has confirmed `channel` on a live connection, so every message
    /// published on it from then on is delivered. Returns false if nothing holds a reference to
    /// the channel (any more). Throws `RedisConnectionError` while its primary is unreachable,
    /// and `CancellationError` if the task is cancelled first.
    public func waitUntilSubscribed(_ channel: String) async throws -> Bool {
        enum Outcome { case unavailable, subscribed, unwanted, waiting, cancelled }
        let id = state.withLockedValue { $0.waiterID() }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (watcher: Watcher) in
                let outcome: Outcome = state.withLockedValue { state in
                    if Task.isCancelled { return .cancelled }
                    guard var entry = state.channels[channel], entry.count > 0 else { return .unwanted }
                    if entry.confirmed { return .subscribed }
                    guard state.liveOwner(of: channel) != nil else { return .unavailable }
                    entry.watchers[id] = watcher
                    state.channels[channel] = entry
                    return .waiting
                }
                switch outcome {
                case .unavailable: watcher.resume(throwing: RedisConnectionError.unavailable(retryAfterMilliseconds: 1000))
                case .subscribed: watcher.resume(returning: true)
                case .unwanted: watcher.resume(returning: false)
                case .cancelled: watcher.resume(throwing: CancellationError())
                case .waiting: break
                }
            }
        } onCancel: {
            state.withLockedValue { $0.channels[channel]?.watchers.removeValue(forKey: id) }?.resume(throwing: CancellationError())
        }
    }

    /// Whether Redis has confirmed the channel's latest SSUBSCRIBE on a live connection. Asked
    /// from `onMessage`, it tells whether the message came on that subscription (one still in
    /// flight from an earlier subscription of the channel comes before the confirmation).
    public func isConfirmed(_ channel: String) -> Bool {
        state.withLockedValue { $0.channels[channel]?.confirmed ?? false }
    }

    /// The shard `channel` is subscribed on, or would be (its slot's primary now).
    public func shard(of channel: String) -> Shard? {
        state.withLockedValue { $0.channels[channel]?.shard ?? $0.topology?.owner(of: channel)?.address }
    }

    /// Drops one reference to `channel`; the last one unsubscribes.
    public func unsubscribe(_ channel: String) {
        let watchers = state.withLockedValue { state -> [Watcher] in
            guard var entry = state.channels[channel] else { return [] }
            entry.count -= 1
            if entry.count > 0 {
                state.channels[channel] = entry
                return []
            }
            state.drop(channel, entry)
            return Array(entry.watchers.values)
        }
        watchers.forEach { $0.resume(returning: false) }
    }

    // MARK: Connections

    /// Keeps a connection up to every primary, following the cluster's map, until the task is
    /// cancelled.
    public func run() async {
        await withDiscardingTaskGroup { group in
            if client.isCluster {
                // A failover or a slot moved shows first as a connection lost or a channel
                // dropped; the map is read again then, and every few seconds in any case.
                group.addTask {
                    while (try? await Task.sleep(for: .seconds(2))) != nil {
                        // Followed even if unchanged: channels left subscribed nowhere go out again.
                        self.follow(try? await self.client.refreshTopology())
                    }
                }
                group.addTask {
                    while !Task.isCancelled, (try? await self.client.topology()) == nil {
                        try? await Task.sleep(for: .milliseconds(500))
                    }
                }
            }
            for await topology in client.topologyUpdates() { follow(topology) }
            group.cancelAll()
        }
        let tasks = state.withLockedValue { state in
            defer { state.links = [:] }
            return state.links.values.compactMap(\.task)
        }
        for task in tasks {
            task.cancel()
            await task.value
        }
        messageSink.finish()
    }

    /// Takes the map, unless a newer one was taken already: starts a connection to each new
    /// primary, stops those to primaries gone, and sends each channel whose slot moved to its
    /// new owner. Those waiting on a channel whose owner is not connected are told it is
    /// unavailable.
    private func follow(_ topology: ClusterTopology?) {
        guard let topology else { return }
        typealias Followed = (stopped: [Task<Void, Never>], interrupted: Set<Shard>, pings: [RedisConnection], waiters: [Waiter], watchers: [Watcher])
        let followed = state.withLockedValue { state -> Followed? in
            guard topology.version >= state.topology?.version ?? 0 else { return nil }
            let before = state.interrupted
            state.topology = topology
            let wanted = Set(topology.primaries.map(\.address))
            var stopped: [Task<Void, Never>] = []
            var (waiters, watchers) = ([Waiter](), [Watcher]())
            for (shard, link) in state.links where !wanted.contains(shard) {
                if let task = link.task { stopped.append(task) }
                let (lostWaiters, lostWatchers) = state.detachChannels(from: shard)
                waiters += lostWaiters
                watchers += lostWatchers
                state.links[shard] = nil
                state.interrupted.remove(shard)
            }
            for primary in topology.primaries where state.links[primary.address] == nil {
                let id = state.waiterID()
                var link = Link(endpoint: primary, id: id)
                link.task = Task { await self.keepConnected(primary.address, link: id) }
                state.links[primary.address] = link
            }
            var written: Set<Shard> = []
            for (name, var channel) in state.channels {
                if let shard = state.route(name, &channel, resuming: true) { written.insert(shard) }
                state.channels[name] = channel
            }
            let (unroutedWaiters, unroutedWatchers) = state.detachUnrouted()
            // The PINGs count from now, but go out after `onInterrupted`: their PONG (and so
            // `onResubscribed`) must not come before it.
            let pings = state.expectPongs(written)
            return (stopped, state.interrupted.subtracting(before).union(written), pings, waiters + unroutedWaiters, watchers + unroutedWatchers)
        }
        guard let followed else { return }
        followed.stopped.forEach { $0.cancel() }
        for shard in followed.interrupted { onInterrupted?(shard) }
        followed.pings.forEach { $0.sendWithoutReply(["PING"]) }
        followed.waiters.forEach { $0.resume(throwing: RedisConnectionError.unavailable(retryAfterMilliseconds: 1000)) }
        followed.watchers.forEach { $0.resume(throwing: RedisConnectionError.unavailable(retryAfterMilliseconds: 1000)) }
    }

    /// Keeps the connection to one primary up until the task is cancelled.
    private func keepConnected(_ shard: Shard, link: UInt64) async {
        var backoff = Backoff()
        var recovering = false
        while !Task.isCancelled {
            guard let endpoint = state.withLockedValue({ $0.links[shard]?.id == link ? $0.links[shard]?.endpoint : nil }) else { return }
            do {
                let connection = try await RedisConnection.connect(
                    to: endpoint, on: group, connectTimeout: .seconds(2), commandTimeout: .seconds(5),
                    onPush: { [weak self] reply in self?.receive(reply, on: shard, link: link) })
                backoff.reset()
                if recovering { onConnectionEvent?(.restored) }
                recovering = true
                guard connected(connection, to: shard, link: link) else {
                    await connection.close()
                    return
                }
                logger.debug("subscriber connected", metadata: ["redis": "\(endpoint)"])
                await withTaskCancellationHandler {
                    try? await connection.closeFuture.get()
                } onCancel: {
                    connection.channel.close(promise: nil)
                }
                connectionLost(to: shard, link: link)
                if !Task.isCancelled {
                    logger.warning("subscriber connection lost", metadata: ["redis": "\(endpoint)"])
                    onConnectionEvent?(.lost)
                }
            } catch {
                recovering = true
                interrupt(shard, link: link)
                logger.warning("subscriber cannot connect", metadata: ["redis": "\(endpoint)", "error": "\(error)"])
                onConnectionEvent?(.connectFailed)
            }
            // The primary may have failed over to a replica: the map says where to go now.
            if client.isCluster { _ = try? await client.refreshTopology() }
            try? await Task.sleep(for: .nanoseconds(backoff.next().nanoseconds))
        }
    }

    /// Drops the connection to `shard` (or every connection); it opens again and subscribes
    /// again to its channels. For a subscription found dead while its connection looks alive.
    public func reconnect(_ shard: Shard? = nil) {
        let connections = state.withLockedValue { state in
            state.links.filter { shard == nil || $0.key == shard }.values.compactMap(\.connection)
        }
        for connection in connections { connection.channel.close(promise: nil) }
    }

    /// Whether the connection to `shard` is up.
    public func isConnected(to shard: Shard) -> Bool { state.withLockedValue { $0.links[shard]?.isUp ?? false } }

    /// Waits until the subscriber has a live connection to every primary (or the task is cancelled).
    public func waitUntilConnected() async {
        let id = state.withLockedValue { $0.waiterID() }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
                let ready = state.withLockedValue { state in
                    if Task.isCancelled || state.isConnected { return true }
                    state.connectedWaiters[id] = waiter
                    return false
                }
                if ready { waiter.resume() }
            }
        } onCancel: {
            state.withLockedValue { $0.connectedWaiters.removeValue(forKey: id) }?.resume()
        }
    }

    /// A new connection to `shard`: subscribes there to every channel its primary owns, then
    /// PINGs. False if the shard is no longer wanted.
    private func connected(_ connection: RedisConnection, to shard: Shard, link: UInt64) -> Bool {
        let waiters = state.withLockedValue { state -> [CheckedContinuation<Void, Never>]? in
            guard state.links[shard]?.id == link, !Task.isCancelled else { return nil }
            state.links[shard]!.connection = connection
            state.links[shard]!.subscribesInFlight = [:]
            state.links[shard]!.unsubscribesInFlight = [:]
            state.links[shard]!.pongsAwaited = 0
            state.links[shard]!.broken = false
            // The first connection too: `onResubscribed` says the shard's subscription is whole.
            state.interrupted.insert(shard)
            for (name, var channel) in state.channels where channel.shard == nil || channel.shard == shard {
                channel.shard = channel.shard == shard ? nil : channel.shard
                _ = state.route(name, &channel, resuming: true)
                state.channels[name] = channel
            }
            state.ping([shard])
            guard state.isConnected else { return [] }
            defer { state.connectedWaiters = [:] }
            return Array(state.connectedWaiters.values)
        }
        waiters?.forEach { $0.resume() }
        return waiters != nil
    }

    /// Only for the shard's current link: an earlier one's end says nothing about the shard now.
    private func connectionLost(to shard: Shard, link: UInt64) {
        let lost = state.withLockedValue { state -> ([Waiter], [Watcher])? in
            guard state.links[shard]?.id == link else { return nil }
            state.links[shard]?.connection = nil
            state.links[shard]?.pongsAwaited = 0
            state.links[shard]?.subscribesInFlight = [:]
            state.links[shard]?.unsubscribesInFlight = [:]
            return state.detachChannels(from: shard)
        }
        guard let (waiters, watchers) = lost else { return }
        onInterrupted?(shard)
        waiters.forEach { $0.resume(throwing: RedisConnectionError.connectionClosed) }
        watchers.forEach { $0.resume(throwing: RedisConnectionError.connectionClosed) }
    }

    private func interrupt(_ shard: Shard, link: UInt64) {
        let current = state.withLockedValue { state in
            guard state.links[shard]?.id == link else { return false }
            state.interrupted.insert(shard)
            return true
        }
        if current { onInterrupted?(shard) }
    }

    /// What a subscriber connection read. Messages count from any connection; the rest only
    /// from the shard's current link (an earlier one's late replies would confirm or break
    /// the wrong connection's state).
    private func receive(_ reply: RESPValue, on shard: Shard, link: UInt64) {
        if case .array(let parts) = reply, parts.first?.string == "smessage" {
            guard parts.count == 3, let channel = parts[1].string, case .bulkString(let payload) = parts[2] else { return }
            let message = PubSubMessage(channel: channel, payload: payload)
            if let onMessage { onMessage(message) } else { messageSink.yield(message) }
            return
        }
        guard state.withLockedValue({ $0.links[shard]?.id == link }) else { return }
        if reply == .simpleString("PONG") { return ponged(shard) }  // PING with no channels subscribed
        if let message = reply.errorMessage { return refused(message, on: shard) }
        guard case .array(let parts) = reply, let kind = parts.first?.string else { return }
        switch kind {
        case "pong":
            ponged(shard)
        case "ssubscribe":
            guard parts.count == 3, let channel = parts[1].string else { return }
            let (waiters, watchers) = state.withLockedValue { state -> ([Waiter], [Watcher]) in
                let inFlight = (state.links[shard]?.subscribesInFlight[channel] ?? 1) - 1
                state.links[shard]?.subscribesInFlight[channel] = inFlight > 0 ? inFlight : nil
                guard inFlight <= 0, var entry = state.channels[channel], entry.shard == shard else { return ([], []) }
                entry.confirmed = true
                defer { entry.waiters = [:]; entry.watchers = [:]; state.channels[channel] = entry }
                return (Array(entry.waiters.values), Array(entry.watchers.values))
            }
            waiters.forEach { $0.resume() }
            watchers.forEach { $0.resume(returning: true) }
        case "sunsubscribe":
            guard parts.count == 3, let channel = parts[1].string else { return }
            let dropped = state.withLockedValue { state -> Bool in
                let ours = state.links[shard]?.unsubscribesInFlight[channel] ?? 0
                state.links[shard]?.unsubscribesInFlight[channel] = ours > 1 ? ours - 1 : nil
                guard ours == 0, state.channels[channel]?.shard == shard else { return false }
                state.channels[channel]!.confirmed = false
                state.channels[channel]!.shard = nil
                state.interrupted.insert(shard)
                state.ping([shard])  // its reply ends the interruption of what stays on this shard
                return true
            }
            if dropped {
                // Redis dropped a channel still wanted: its slot moved to another primary. The
                // map is read again and the channel subscribed at its owner; streams catch up.
                logger.warning("Redis dropped a subscribed channel: following its slot", metadata: ["channel": "\(channel)"])
                onInterrupted?(shard)
                Task { self.follow(try? await self.client.refreshTopology()) }
            }
        default:
            break
        }
    }

    /// The server refused a SSUBSCRIBE (`MOVED`: this primary no longer owns the channel's slot).
    /// The refusal names no channel, so the connection is replaced once the map is read again.
    private func refused(_ message: String, on shard: Shard) {
        let connection = state.withLockedValue { state -> RedisConnection? in
            state.links[shard]?.broken = true
            return state.links[shard]?.connection
        }
        logger.warning("Redis refused a subscription: reconnecting", metadata: ["error": "\(message)"])
        Task {
            _ = try? await self.client.refreshTopology()
            connection?.channel.close(promise: nil)
        }
    }

    private func ponged(_ shard: Shard) {
        let settled = state.withLockedValue { state -> Bool in
            guard state.links[shard]?.broken == false else { return false }
            if let awaited = state.links[shard]?.pongsAwaited { state.links[shard]!.pongsAwaited = max(0, awaited - 1) }
            guard state.interrupted.contains(shard), state.isSettled(shard) else { return false }
            state.interrupted.remove(shard)
            return true
        }
        if settled { onResubscribed?(shard) }
    }
}
