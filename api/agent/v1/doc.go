// Package agentapi is the host-guest protocol of podvm (protobuf services
// served over ttrpc by the guest agent). The code beside this file is
// generated from agent.proto by `make generate`.
package agentapi
