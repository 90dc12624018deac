# frozen_string_literal: true

module Nightmare
  # Raised by the native front for failures of the system around it (a
  # descriptor that is gone, a socket that broke). Bad configuration raises
  # ArgumentError instead, as Unicorn's own directives do.
  class Error < StandardError; end

  # A connection to the workers' private socket that does not open with
  # this master's preamble: not a request from its front.
  class PreambleRefused < Error; end

  # A connection closed before it sent a byte: a front checking that this
  # host is still on the network, not a request. Dropped without a word.
  class PreambleProbe < PreambleRefused; end
end
