# frozen_string_literal: true

require_relative "preamble_acceptor"

module Nightmare
  # The master's private listener, through which its front hands over
  # buffered requests: it stands in a worker's list of listeners in place
  # of the public ones. Each preamble carries the master's secret, so a
  # connection from anyone else is dropped.
  class HandoffAcceptor < PreambleAcceptor
    def initialize(listener, secret, logger)
      super(listener, Nightmare::Native::PreambleReader.new(secret), logger)
    end

    private

    def listener_name = "the workers' private socket"
  end
end
