#include "gateways/support/grpc_client.hpp"

#include <fstream>
#include <sstream>

#include <google/protobuf/unknown_field_set.h>
#include <grpc/health/v1/health.grpc.pb.h>
#include <grpcpp/generic/generic_stub.h>

namespace troupe::test {

namespace {

std::string file_text(const std::filesystem::path& p) {
  if (p.empty())
    return {};
  std::ifstream in{p, std::ios::binary};
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string bytes_of(const grpc::ByteBuffer& buf) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!buf.Dump(&slices).ok())
    return out;
  for (const auto& s : slices)
    out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

grpc::ByteBuffer buffer_of(const std::string& bytes) {
  grpc::Slice slice{bytes.data(), bytes.size()};
  return grpc::ByteBuffer{&slice, 1};
}

// Waits for the one operation in flight on `cq`; false when it failed or the
// deadline passed.
bool await(grpc::CompletionQueue& cq, std::chrono::system_clock::time_point deadline) {
  void* tag = nullptr;
  bool ok = false;
  return cq.AsyncNext(&tag, &ok, deadline) == grpc::CompletionQueue::GOT_EVENT && ok;
}

void drain(grpc::CompletionQueue& cq) {
  cq.Shutdown();
  void* tag = nullptr;
  bool ok = false;
  while (cq.Next(&tag, &ok)) {
  }
}

void* tag_of(int n) {
  return reinterpret_cast<void*>(static_cast<intptr_t>(n));
}

} // namespace

std::shared_ptr<grpc::Channel>
loopback_channel(uint16_t port, const std::optional<grpc_tls_files>& tls) {
  grpc::ChannelArguments args;
  // Subchannels are otherwise shared by channels with equal arguments: a
  // test's connection must be its own (to cancel it, to present other
  // credentials).
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (tls) {
    grpc::SslCredentialsOptions opts;
    opts.pem_root_certs = file_text(tls->ca);
    opts.pem_cert_chain = file_text(tls->cert);
    opts.pem_private_key = file_text(tls->key);
    creds = grpc::SslCredentials(opts);
    args.SetSslTargetNameOverride("localhost");
  } else {
    creds = grpc::InsecureChannelCredentials();
  }
  return grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(port), creds, args);
}

std::unique_ptr<grpc::ClientContext>
client_context(std::chrono::milliseconds timeout,
               const std::vector<std::pair<std::string, std::string>>& metadata) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + timeout);
  for (const auto& [k, v] : metadata)
    ctx->AddMetadata(k, v);
  return ctx;
}

std::optional<std::string>
metadata_value(const std::multimap<grpc::string_ref, grpc::string_ref>& md,
               const std::string& key) {
  auto it = md.find(grpc::string_ref{key});
  if (it == md.end())
    return std::nullopt;
  return std::string{it->second.data(), it->second.size()};
}

health_answer check_health(const std::shared_ptr<grpc::Channel>& channel,
                           const std::string& service,
                           std::chrono::milliseconds timeout) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::health::v1::HealthCheckRequest req;
  req.set_service(service);
  grpc::health::v1::HealthCheckResponse resp;
  auto ctx = client_context(timeout);
  health_answer out;
  out.status = stub->Check(ctx.get(), req, &resp);
  out.serving_status = static_cast<int>(resp.status());
  return out;
}

raw_reply raw_unary_call(const std::shared_ptr<grpc::Channel>& channel,
                         const std::string& method, const std::string& request,
                         std::chrono::milliseconds timeout) {
  grpc::GenericStub stub{channel};
  grpc::CompletionQueue cq;
  auto ctx = client_context(timeout);
  auto deadline = std::chrono::system_clock::now() + timeout + std::chrono::seconds{5};
  auto call = stub.PrepareUnaryCall(ctx.get(), method, buffer_of(request), &cq);
  call->StartCall();
  grpc::ByteBuffer reply;
  raw_reply out;
  call->Finish(&reply, &out.status, tag_of(1));
  if (!await(cq, deadline)) {
    ctx->TryCancel();
    await(cq, deadline);
    out.status = grpc::Status{grpc::StatusCode::DEADLINE_EXCEEDED, "no answer"};
  }
  if (out.status.ok())
    out.bytes = bytes_of(reply);
  drain(cq);
  return out;
}

reflection_answer
list_services_by_reflection(const std::shared_ptr<grpc::Channel>& channel,
                            std::chrono::milliseconds timeout) {
  grpc::GenericStub stub{channel};
  grpc::CompletionQueue cq;
  auto ctx = client_context(timeout);
  auto deadline = std::chrono::system_clock::now() + timeout + std::chrono::seconds{5};
  auto call = stub.PrepareCall(
      ctx.get(), "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", &cq);
  reflection_answer out;
  std::vector<std::string> replies;
  call->StartCall(tag_of(1));
  bool ok = await(cq, deadline);
  if (ok) {
    // ServerReflectionRequest{list_services: ""}: field 7, length-delimited, empty.
    call->Write(buffer_of(std::string{"\x3a\x00", 2}), tag_of(2));
    ok = await(cq, deadline);
  }
  if (ok) {
    call->WritesDone(tag_of(3));
    ok = await(cq, deadline);
  }
  while (ok) {
    grpc::ByteBuffer buf;
    call->Read(&buf, tag_of(4));
    ok = await(cq, deadline);
    if (ok)
      replies.push_back(bytes_of(buf));
  }
  call->Finish(&out.status, tag_of(5));
  if (!await(cq, deadline))
    out.status = grpc::Status{grpc::StatusCode::DEADLINE_EXCEEDED, "no answer"};
  drain(cq);
  // ServerReflectionResponse.list_services_response (6) holds services (1),
  // each with its name (1). Read as unknown fields: no reflection stubs needed.
  for (const auto& r : replies) {
    google::protobuf::UnknownFieldSet top;
    if (!top.ParseFromString(r))
      continue;
    for (int i = 0; i < top.field_count(); ++i) {
      const auto& f = top.field(i);
      if (f.number() != 6 ||
          f.type() != google::protobuf::UnknownField::TYPE_LENGTH_DELIMITED)
        continue;
      google::protobuf::UnknownFieldSet list;
      if (!list.ParseFromString(f.length_delimited()))
        continue;
      for (int j = 0; j < list.field_count(); ++j) {
        const auto& svc = list.field(j);
        if (svc.number() != 1 ||
            svc.type() != google::protobuf::UnknownField::TYPE_LENGTH_DELIMITED)
          continue;
        google::protobuf::UnknownFieldSet entry;
        if (!entry.ParseFromString(svc.length_delimited()))
          continue;
        for (int k = 0; k < entry.field_count(); ++k)
          if (entry.field(k).number() == 1 &&
              entry.field(k).type() ==
                  google::protobuf::UnknownField::TYPE_LENGTH_DELIMITED)
            out.services.push_back(entry.field(k).length_delimited());
      }
    }
  }
  return out;
}

} // namespace troupe::test
