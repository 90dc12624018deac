# frozen_string_literal: true

module Nightmare
  VERSION = "0.1.0"
end
