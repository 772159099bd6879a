// Twin queries over REST, as azure-iothub's Registry.createQuery pages them (service.md §3.1,
// semantics.md §1): POST /devices/query with {"query": "<sql>"}, the page size in
// x-ms-max-item-count and the previous page's token in x-ms-continuation. The answer is a JSON
// array with x-ms-item-type, and x-ms-continuation only when another page follows (the SDK asks
// again for as long as the header is there, even empty). twins::service::query does the rest.
#include "base/text.hpp"
#include "domain/twins/service.hpp"
#include "heads/http/routes.hpp"

#include <boost/json/array.hpp>
#include <fmt/format.h>

namespace hub::http::detail {
namespace {

namespace bj = boost::json;

response fail(const route_context& c, const error& e) { return error_response(e, c.svc.clk); }
response fail(const route_context& c, errc code, std::string message) {
  return error_of(code, std::move(message), c.svc.clk);
}

constexpr std::size_t default_page_size = 100;

// x-ms-max-item-count: a positive whole number (the service cuts it to IoT Hub's 100); absent: 100.
result<std::size_t> page_size_of(const request& req) {
  const auto header = req.header("x-ms-max-item-count");
  if (!header) return default_page_size;
  const auto n = text::parse_int(text::trim(*header));
  if (!n || *n < 1) {
    return make_error(errc::argument_invalid,
                      fmt::format("x-ms-max-item-count must be a positive number, not '{}'", header->substr(0, 32)));
  }
  return static_cast<std::size_t>(*n);
}

response query_twins(const route_context& c) {
  if (c.svc.twins == nullptr) return fail(c, errc::service_unavailable, "Twin queries are not available on this hub");
  auto body = body_object(c.req);
  if (!body) return fail(c, body.error());
  const bj::value* text = body->if_contains("query");
  if (text == nullptr || !text->is_string() || text->get_string().empty()) {
    return fail(c, errc::argument_invalid, "The request body must name the query: {\"query\": \"SELECT ...\"}");
  }
  auto page_size = page_size_of(c.req);
  if (!page_size) return fail(c, page_size.error());
  const std::string_view token = text::trim(c.req.header("x-ms-continuation").value_or(std::string_view{}));

  auto page = c.svc.twins->query({.text = text->get_string(), .page_size = *page_size, .continuation = token});
  if (!page) return fail(c, page.error());
  bj::array items;
  items.reserve(page->items.size());
  for (auto& item : page->items) items.push_back(std::move(item));
  response r = json_response(200, items);
  r.headers.emplace_back("x-ms-item-type", std::string(twins::to_string(page->type)));
  if (page->continuation) r.headers.emplace_back("x-ms-continuation", std::move(*page->continuation));
  return r;
}

using p = auth::permission;

// Queries read whole twins: RegistryRead (what IoT Hub's docs ask of a query), or ServiceConnect,
// as for reading one twin.
constexpr route table[] = {
    {"POST", "devices/query", p::registry_read, query_twins, nullptr, p::service_connect},
};

}  // namespace

std::span<const route> query_routes() { return table; }

}  // namespace hub::http::detail
