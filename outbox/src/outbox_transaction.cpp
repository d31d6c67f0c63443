#include <troupe/outbox/outbox_transaction.hpp>

#include <troupe/runtime/call_context.hpp>

namespace troupe {

void outbox_transaction::emit_encoded(
    std::string destination, std::string key, std::string event_type, std::string payload,
    std::vector<std::pair<std::string, std::string>> extra_headers) {
  auto seq = sequence_->next();
  outbox_row row;
  row.event.id = sequence_->message_id(seq);
  row.event.destination = std::move(destination);
  row.event.key = std::move(key);
  row.event.headers.emplace_back(event_headers::content_type, caf_binary_content_type);
  row.event.headers.emplace_back(event_headers::event_type, std::move(event_type));
  auto& ctx = call_context::current();
  if (!ctx.correlation_id.empty()) {
    row.event.headers.emplace_back(event_headers::correlation_id, ctx.correlation_id);
    row.event.headers.emplace_back(event_headers::traceparent,
                                   event_traceparent(ctx.correlation_id, seq));
  }
  for (auto& h : extra_headers)
    row.event.headers.push_back(std::move(h));
  row.event.payload = std::move(payload);
  row.committed_ms = unix_millis();
  batch_.put(store_column::outbox, outbox_row_key(seq), encode_outbox_row(row));
  ++events_;
}

} // namespace troupe
