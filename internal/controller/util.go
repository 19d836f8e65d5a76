package controller

import (
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"

	"sluice.dev/sluice/translator"
)

func pieceDigest(p *translator.Piece) string { return p.Digest }

func claEqual(a, b *endpointv3.ClusterLoadAssignment) bool { return proto.Equal(a, b) }
