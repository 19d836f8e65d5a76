package main

import (
	"context"
	"fmt"
	"log"
	"net"
	"net/http"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// An authorization service for Envoy's ext_authz, allowing a request when
// it carries "X-Allow: yes": over HTTP under /authz/ (on $PORT), and over
// gRPC on $AUTHZ_GRPC_PORT if set, where the context Envoy passes goes back
// upstream as X-Authz-Context, and what it got of the body as
// X-Authz-Body.

const allowHeader = "x-allow"

// authzHTTP answers an ext_authz HTTP check (the original path under /authz).
func authzHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get(allowHeader) != "yes" {
		http.Error(w, "denied by the e2e authorization service", http.StatusForbidden)
		return
	}
	w.WriteHeader(http.StatusOK)
}

type authzServer struct {
	authv3.UnimplementedAuthorizationServer
}

func (authzServer) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	attrs := req.GetAttributes()
	if attrs.GetRequest().GetHttp().GetHeaders()[allowHeader] != "yes" {
		return &authv3.CheckResponse{
			Status: &rpcstatus.Status{Code: int32(codes.PermissionDenied)},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status: &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden}, Body: "denied by the e2e authorization service\n"}},
		}, nil
	}
	ext := attrs.GetContextExtensions()
	who := strings.Join([]string{ext["namespace"], ext["name"], ext["visibility"]}, "/")
	body := fmt.Sprintf("raw %q, string %q", attrs.GetRequest().GetHttp().GetRawBody(), attrs.GetRequest().GetHttp().GetBody())
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers: []*corev3.HeaderValueOption{
				{Header: &corev3.HeaderValue{Key: "x-authz-context", Value: who}},
				{Header: &corev3.HeaderValue{Key: "x-authz-body", Value: body}},
			}}},
	}, nil
}

// serveAuthzGRPC serves the gRPC check on port until the process ends.
func serveAuthzGRPC(port string) {
	lis, err := net.Listen("tcp", ":"+port)
	if err != nil {
		log.Fatal(err)
	}
	s := grpc.NewServer()
	authv3.RegisterAuthorizationServer(s, authzServer{})
	log.Printf("ext_authz gRPC service on :%s", port)
	if err := s.Serve(lis); err != nil {
		log.Print(err)
	}
}
