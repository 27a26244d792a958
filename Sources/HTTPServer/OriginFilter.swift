import Hummingbird

/// Refuses browser requests from origins not on the allowed list (CORSMiddleware then echoes
/// the allowed origin). Requests without an `Origin` header (non-browser clients) pass.
struct OriginFilter<Context: RequestContext>: RouterMiddleware {
    let allowed: Set<String>

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if let origin = request.headers[.origin], !allowed.contains(origin) {
            throw APIError.originNotAllowed
        }
        return try await next(request, context)
    }
}
