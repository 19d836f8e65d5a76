package controller

import (
	"crypto/rand"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"sluice.dev/sluice/translator"
)

func pieceDigest(p *translator.Piece) string { return p.Digest }

func claEqual(a, b *endpointv3.ClusterLoadAssignment) bool { return proto.Equal(a, b) }

func metaName(ns, name string) metav1.ObjectMeta { return metav1.ObjectMeta{Namespace: ns, Name: name} }

func randSuffix() string { return rand.Text()[:8] }
