package sandbox

import "github.com/gofiber/fiber/v2"

// PLACEHOLDER: replaced by the QQ simulator.
type qqState struct{}

func newQQState() *qqState { return &qqState{} }

func (s *Sandbox) mountQQ(r fiber.Router) {}
