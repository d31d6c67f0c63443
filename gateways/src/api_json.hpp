#pragma once

// The API's most frequent replies written as JSON directly. The text is what
// protobuf's JSON mapping gives for the same message (lowerCamelCase names,
// enum names, RFC 3339 timestamps, default values printed, unset messages
// left out) at a fraction of the cost: the mapping goes through reflection
// and a binary round trip for every reply.

#include <string>

#include <google/protobuf/message.h>
#include <troupe/api/v1/sagas.pb.h>

namespace troupe::gateways {

std::string json_of(const api::v1::Saga& saga);
std::string json_of(const api::v1::StartSagaResponse& response);
std::string json_of(const api::v1::ListSagasResponse& response);
std::string json_of(const google::protobuf::Struct& object);
/// Every other message, through protobuf's JSON mapping.
std::string json_of(const google::protobuf::Message& message);

} // namespace troupe::gateways
