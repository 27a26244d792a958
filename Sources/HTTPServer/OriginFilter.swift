import Hummingbird

/// Refuses browser requests from origins not on the allowed list (CORSMiddleware then echoes
/// the allowed origin), by the rule the direct answers apply (`DirectAnswers`). Requests
/// without an `Origin` header (non-browser clients) pass.
struct OriginFilter<Context: RequestContext>: RouterMiddleware {
    let answers: DirectAnswers

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if answers.refusesOrigin(of: request.head) { throw APIError.originNotAllowed }
        return try await next(request, context)
    }
}
