import NIOCore

/// Runs a task's jobs on one event loop. A relay's task, preferring its connection's loop,
/// runs there from start to answer, resuming where the connection's bytes are rather than on
/// the concurrency pool and hopping back to write.
final class EventLoopExecutor: TaskExecutor {
    let eventLoop: any EventLoop

    init(_ eventLoop: any EventLoop) { self.eventLoop = eventLoop }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        eventLoop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
