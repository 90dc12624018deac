# frozen_string_literal: true

module Nightmare
  # Raised by the native front for failures of the system around it (a
  # descriptor that is gone, a channel that broke). Bad configuration raises
  # ArgumentError instead, as Unicorn's own directives do.
  class Error < StandardError; end
end
